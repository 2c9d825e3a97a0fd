import os
import tempfile

import numpy as np
import pytest

from mtl_jax import cpu

# The suite runs as the mtl-jax command does: XLA's multi-threaded CPU convolutions, enabled
# before JAX starts (tests/test_cpu.py checks both paths in subprocesses).
cpu.enable_fast_convolutions()

# Tests never touch the user's cache; the session's data live in a temporary folder.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One compilation cache for this test run, shared by the xdist workers and the CLI subprocesses
# the tests start (JAX reads these variables when it starts): a program already compiled by
# another process of the same run is loaded, not compiled again. A cache hit runs the same
# executable, so results are unchanged.
_run_id = os.environ.get("PYTEST_XDIST_TESTRUNUID") or str(os.getpid())
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), f"mtl-jax-tests-{_run_id}"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")


def pytest_collection_modifyitems(items):
    """Tests marked ``long`` first: xdist hands tests out in this order, so the long ones do not
    leave one worker running alone at the end."""
    items.sort(key=lambda item: item.get_closest_marker("long") is None)


def _jit_without_llvm_optimisation(real_jit):
    """``jax.jit`` compiling without LLVM's optimisations (see below)."""
    from mtl_jax.train.state import run_once_compiler_options

    def jit(fun=None, /, **kwargs):
        if fun is None:  # @jax.jit(static_argnums=...)
            return lambda f: jit(f, **kwargs)
        options = {**run_once_compiler_options(), **(kwargs.pop("compiler_options", None) or {})}
        return real_jit(fun, compiler_options=options, **kwargs)

    jit.real_jit = real_jit
    return jit


# Every ``jax.jit`` made during the tests compiles without LLVM's optimisations
# (:func:`mtl_jax.train.state.run_once_compiler_options`): the suite's programs are small and run
# a few steps, so most of their time was compiling. The values are the same mathematics, equal up
# to rounding, and bitwise comparisons compare runs made the same way (module fixtures included).
# Tests marked ``long`` (training runs held to learning targets, the seed example) run with XLA's
# defaults, as users' runs do; so do the CLI's subprocesses and tests/test_cpu.py's.
import jax  # noqa: E402

jax.jit = _jit_without_llvm_optimisation(jax.jit)


@pytest.fixture(autouse=True)
def _long_tests_compile_as_users_do(request, monkeypatch):
    if request.node.get_closest_marker("long"):
        monkeypatch.setattr(jax, "jit", jax.jit.real_jit)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tfds")


@pytest.fixture(scope="session")
def tiny_houses(data_dir):
    from mtl_jax.data import load_houses

    return load_houses(train_size=96, validation_size=40, test_size=40, seed=0, data_dir=data_dir)


def toy_regression_classification(n=64, seed=0, features=8):
    """A learnable two-task problem on vectors: a linear target and a 3-class label."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype(np.float32)
    y = (x[:, :2] @ np.array([1.5, -2.0])).astype(np.float32)
    label = np.digitize(x[:, 2] + 0.5 * x[:, 3], [-0.5, 0.5]).astype(np.int32)
    return {"x": x, "y": y, "label": label}


def assert_resumes_bitwise(model, tasks, data, tmp_path, **options):
    """Trains 2 epochs of 5 steps with checkpoints every 3 steps, deletes the last two checkpoints
    (steps 9 and 10), resumes from step 6 and checks state and history equal the uninterrupted run."""
    import shutil

    import chex
    import jax
    import optax

    import mtl_jax as mtl

    from mtl_jax.data.batch_streams import as_dataset, is_batch_stream
    from mtl_jax.data.sources import num_examples
    from mtl_jax.data.task_mixture import is_mixture

    assert (is_batch_stream(as_dataset(data)) or (is_mixture(data) and data.steps(8) == 5)
            or num_examples(data) == 40)
    options = {"epochs": 2, "batch_size": 8, "input_key": "x", "progress": False, "optimizer": optax.adam(1e-2),
               "checkpoint_every_steps": 3, "keep_checkpoints": 10, "tensorboard": False, "plots": False, **options}
    state, history = mtl.fit(model, tasks, data, workdir=tmp_path / "a", **options)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    for step in ("9", "10"):
        shutil.rmtree(tmp_path / "b" / "checkpoints" / step)
    resumed, resumed_history = mtl.fit(model, tasks, data, workdir=tmp_path / "b", resume=True, **options)
    chex.assert_trees_all_equal(jax.device_get(resumed), jax.device_get(state))
    assert resumed_history == history


def init_variables(module, *args, **kwargs):
    """``module.init(*args, **kwargs)`` compiled as one program without LLVM's optimisations, as
    :func:`mtl_jax.train.init_params` does: op by op, a model's initialisers take seconds of
    dispatches (values equal up to rounding)."""
    import jax

    from mtl_jax.train.state import run_once_compiler_options

    return jax.jit(lambda *a: module.init(*a, **kwargs), compiler_options=run_once_compiler_options())(*args)


def jit_once(fun, **kwargs):
    """``jax.jit(fun)`` for a computation a test runs once (a reference Jacobian, a forward-mode
    product to compare): compiled without LLVM's optimisations, which take most of a large
    program's compile time on CPU and buy nothing for one call. The values are the same
    mathematics (equal up to rounding); the product's own steps keep the default options."""
    import jax

    from mtl_jax.train.state import run_once_compiler_options

    return jax.jit(fun, compiler_options=run_once_compiler_options(), **kwargs)


def mock_tfds(num_examples: int):
    """``tfds.testing.mock_data(num_examples)`` with random examples of any public TFDS dataset
    (nothing downloads), patched for a TFDS bug: its mock data sources' ``__getitems__`` (the
    batched read real array_record sources have) is a ``functools.partial`` of a method, set on
    the instance, so Python calls it without ``self`` and it fails."""
    import contextlib

    import tensorflow_datasets as tfds
    from tensorflow_datasets.testing import mocking

    real = mocking._getitems

    def getitems(*args, generator, serialized=False):
        if len(args) == 1:  # called without self: the record keys only
            return [generator[key] for key in args[0]]
        return real(*args, generator=generator, serialized=serialized)

    @contextlib.contextmanager
    def patched():
        mocking._getitems = getitems
        try:
            with tfds.testing.mock_data(num_examples=num_examples):
                yield
        finally:
            mocking._getitems = real

    return patched()


def free_port() -> int:
    """A TCP port free on localhost now (for a coordinator of processes under test)."""
    import socket

    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]
