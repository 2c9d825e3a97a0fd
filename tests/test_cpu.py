"""Faster CPU convolutions only on request; the same path gives bitwise the same gradients."""
import json
import os
import subprocess
import sys

import pytest

from mtl_jax import cpu

SCRIPT = """
import hashlib, json, os, sys
mode = sys.argv[1]
if mode == "enable-first":
    from mtl_jax import cpu
    cpu.enable_fast_convolutions()
if "jax-first" in mode:
    import jax.numpy as jnp
    jnp.ones(1).block_until_ready()  # a backend starts before mtl_jax is imported
import jax
from jax import lax
import numpy as np
import mtl_jax as mtl
from mtl_jax import cpu
from mtl_jax.models import SeedCNN
from mtl_jax.models.conv import convolution_path
enabled_later = cpu.enable_fast_convolutions() if mode == "jax-first-enable" else None
x, w = jax.numpy.ones((64, 32, 32, 32)), jax.numpy.ones((3, 3, 32, 64))  # the seed CNN layer (compiled only)
hlo = jax.jit(lambda x, w: lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
              ).lower(x, w).compile().as_text()
model = SeedCNN()
digest = None
if os.environ.get("WITH_GRADS") == "1":
    images = jax.random.uniform(jax.random.PRNGKey(0), (2, 32, 32, 3))
    params = jax.jit(model.init)(jax.random.PRNGKey(1), images)["params"]  # jitted: op by op takes seconds
    grads = jax.jit(jax.grad(lambda p: (model.apply({"params": p}, images) ** 2).mean()))(params)
    digest = hashlib.sha256(b"".join(np.asarray(g).tobytes() for g in jax.tree.leaves(grads))).hexdigest()
print(json.dumps({"flags": os.environ.get("XLA_FLAGS", ""), "enabled": cpu.fast_convolutions_enabled(),
                  "enabled_later": enabled_later, "path": convolution_path(model), "grads": digest,
                  "ynn_convolution": any("__ynn_fusion" in line and "conv_general_dilated" in line
                                         for line in hlo.splitlines())}))
"""


def _run(mode="plain", grads=False, **env):
    environment = {**os.environ, "JAX_PLATFORMS": "cpu", "WITH_GRADS": "1" if grads else "0", **env}
    for name in ("XLA_FLAGS", "MTL_JAX_KEEP_XLA_FLAGS"):
        if name not in env:
            environment.pop(name, None)
    done = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, env=environment,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


pytestmark = pytest.mark.skipif(cpu._jaxlib_version() not in cpu.KNOWN_JAXLIB,
                                reason="the flag is only set for jaxlib versions known to take it")


def test_importing_mtl_jax_changes_nothing_and_the_import_order_does_not_change_gradients():
    mtl_first, jax_first = _run("plain", grads=True), _run("jax-first", grads=True)
    for result in (mtl_first, jax_first):
        assert result["flags"] == "" and not result["enabled"]
        assert result["path"] == "mtl_jax" and result["ynn_convolution"]
    assert mtl_first["grads"] == jax_first["grads"] is not None  # bitwise


def test_enabling_first_makes_xlas_convolutions_multithreaded_and_auto_uses_them():
    result = _run("enable-first", grads=True, XLA_FLAGS="--xla_cpu_enable_fast_min_max=true")
    assert result["flags"].split() == ["--xla_cpu_enable_fast_min_max=true", cpu.FLAG]  # appended, kept
    assert result["enabled"] and result["path"] == "xla-multithreaded"
    assert not result["ynn_convolution"]  # XLA's own (multi-threaded) convolution
    again = _run("jax-first", grads=True, XLA_FLAGS=cpu.FLAG)  # the flag from the environment, JAX imported first
    assert again["path"] == "xla-multithreaded" and again["grads"] == result["grads"]


def test_enabling_is_refused_where_it_cannot_take_effect():
    late = _run("jax-first-enable")
    assert late["enabled_later"] is False and not late["enabled"] and late["path"] == "mtl_jax"
    for result in (_run("enable-first", MTL_JAX_KEEP_XLA_FLAGS="1"),
                   _run("enable-first", XLA_FLAGS="--xla_cpu_experimental_ynn_fusion_type=+individual_convolution")):
        assert cpu.FLAG not in result["flags"] and not result["enabled"]
        assert result["path"] == "mtl_jax" and result["ynn_convolution"]


def test_a_resume_on_another_convolution_path_is_refused(tmp_path):
    from mtl_jax.train.loop import signature_mismatch

    saved = {"tasks": {}, "arrays": {}, "convolution": "mtl_jax"}
    problem = signature_mismatch(saved, {**saved, "convolution": "xla-multithreaded"})
    assert "convolution" in problem and "enable_fast_convolutions" in problem
    assert signature_mismatch({"tasks": {}, "arrays": {}}, saved) is None  # runs from before the record


def test_the_recorded_path_is_the_models_own():
    import mtl_jax as mtl
    from mtl_jax.models import MLP, SeedCNN, hard_sharing
    from mtl_jax.models.conv import convolution_path

    tasks = (mtl.regression("price"),)
    expected = "xla-multithreaded" if cpu.fast_convolutions_enabled() else "mtl_jax"  # conftest enables it
    assert convolution_path(hard_sharing(SeedCNN(), tasks)) == expected
    assert convolution_path(hard_sharing(SeedCNN(conv="fast"), tasks)) == "mtl_jax"
    assert convolution_path(hard_sharing(MLP((8,)), tasks)) is None
