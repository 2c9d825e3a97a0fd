"""Several processes (mtl_jax/distributed.py): two ``mtl-jax train`` processes on localhost, one
CPU device each, train one run over both (CPU collectives over Gloo) with the results of the
one-process run, each reading only its rows of every batch of a streamed TFDS split that
process 0 generated while the other waited; only process 0 writes the run's files; the checkpoint they wrote evaluates in
one process. The connection arguments are checked before JAX starts."""
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from mtl_jax import distributed
from mtl_jax.config import load_config
from mtl_jax.experiment import evaluate_run, train_and_evaluate

from conftest import free_port

ROOT = Path(__file__).resolve().parents[1]


CONFIG = ROOT / "experiments/configs/correlated_tasks.py"
# a generated TFDS dataset, streamed (so each process reads only its rows of every batch), small
OVERRIDES = ["data.train_size=64", "data.validation_size=32", "data.test_size=32", "epochs=2", "batch_size=16",
             "tensorboard=False", "plots=False", "model_kwargs.features=(16,4)", "head_hidden=(8,)",
             "gradient_diagnostics=False", "weighting=uw", "aggregator=upgrad",
             # one device per process on an fsdp axis: the larger arrays are split across the processes
             'mesh={"data": 1, "fsdp": 2}', "fsdp_min_size=64"]


@pytest.mark.long
def test_two_processes_train_one_run_as_one_process_does_and_only_process_0_writes(tmp_path):
    """Both processes start on an empty data folder: process 0 generates the dataset while the
    other waits; each then reads only its half of every batch from the streamed split, and holds
    half of the larger parameters and moments (FSDP across the processes), also when the test
    split is scored at the end."""
    workdir, port, data_dir = tmp_path / "two", free_port(), tmp_path / "data"
    # compiled without LLVM's optimisations, as the suite's in-process programs are (tests/conftest.py)
    env = {**os.environ, "MTL_JAX_DATA_DIR": str(data_dir),
           "XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()}
    command = [sys.executable, "-m", "mtl_jax.cli", "train", "--config", str(CONFIG), "--workdir", str(workdir),
               "--quiet", "--coordinator", f"localhost:{port}", "--num-processes", "2",
               *[arg for o in OVERRIDES for arg in ("--set", o)]]
    processes = [subprocess.Popen([*command, "--process-id", str(i)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for i in range(2)]
    outputs = [p.communicate(timeout=150) for p in processes]
    for p, (out, err) in zip(processes, outputs):
        assert p.returncode == 0, err[-3000:]
    single = train_and_evaluate(load_config(CONFIG, [*OVERRIDES, 'mesh={"data": -1}']), tmp_path / "one",
                                progress=False, data_dir=data_dir)  # this process's one device
    results = json.loads((workdir / "results.json").read_text())
    for key, value in single["final"].items():
        np.testing.assert_allclose(results["final"][key], value, rtol=1e-4, err_msg=key)
    history = json.loads((workdir / "history.json").read_text())
    reference = json.loads((tmp_path / "one" / "history.json").read_text())
    np.testing.assert_allclose(history["train/t0/loss"], reference["train/t0/loss"], rtol=1e-4)
    # process 0 alone wrote the files (no leftover temporary files of the other), and the
    # checkpoint both wrote evaluates in one process
    assert not list(workdir.glob(".*.tmp")) and not (workdir / ".lock").exists()
    scores = evaluate_run(workdir, "test", "latest", data_dir=data_dir)
    np.testing.assert_allclose(scores["t0/rmse"], single["final"]["t0/rmse"], rtol=1e-4)


PARTS_SCRIPT = """
import json, sys
import numpy as np
import optax
from mtl_jax import distributed
distributed.initialize(sys.argv[1], 2, int(sys.argv[2]))
import jax
import mtl_jax as mtl
from mtl_jax.data.batching import epoch_order
from mtl_jax.models import MLP, hard_sharing
from mtl_jax.train.mesh import make_mesh

tasks = (mtl.regression("y"), mtl.classification("label", 3))
rng = np.random.default_rng(0)
data = {"x": rng.normal(size=(37, 8)).astype(np.float32), "y": rng.normal(size=37).astype(np.float32),
        "label": rng.integers(0, 3, 37)}
seen = set()

def parts(seed):
    def of_epoch(epoch, shard):  # this process's rows of every batch of 8 (the last: 5 rows, split 3 + 2)
        seen.add(tuple(shard))
        index, count = shard
        order = epoch_order(37, seed, epoch)
        chosen = [order[i:i + 8] for i in range(0, 37, 8)]
        return [{k: v[rows[index * len(rows) // count:(index + 1) * len(rows) // count]] for k, v in data.items()}
                for rows in chosen]
    return of_epoch

state, history = mtl.fit(hard_sharing(MLP((16,)), tasks), tasks, parts(4), validation=parts(None), epochs=2, seed=4,
                         input_key="x", optimizer=optax.adam(1e-2), progress=False, mesh=make_mesh({"data": -1}))
if jax.process_index() == 0:
    np.savez(sys.argv[3], *[np.asarray(jax.device_get(leaf)) for leaf in jax.tree.leaves(state.params)])
    json.dump({"history": history, "seen": sorted(seen)}, open(sys.argv[3] + ".json", "w"))
"""


def test_two_processes_each_reading_its_part_of_every_batch_train_the_whole_batches_run(tmp_path):
    """``fit`` on a function ``(epoch, shard)`` of batches: each of two processes reads only its
    rows of every batch (the last, short one too) and of the validation batches; the run is the
    one-process run on the whole batches."""
    import optax

    import mtl_jax as mtl
    from mtl_jax.models import MLP, hard_sharing

    script, port, out = tmp_path / "parts.py", free_port(), tmp_path / "two.npz"
    script.write_text(PARTS_SCRIPT)
    env = {**os.environ, "XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()}
    processes = [subprocess.Popen([sys.executable, str(script), f"localhost:{port}", str(i), str(out)], cwd=ROOT,
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outputs = [p.communicate(timeout=120) for p in processes]
    for p, (_, err) in zip(processes, outputs):
        assert p.returncode == 0, err[-3000:]
    two = json.loads(Path(str(out) + ".json").read_text())
    assert two["seen"] == [[0, 2]]  # process 0 was asked for its part, of two
    tasks = (mtl.regression("y"), mtl.classification("label", 3))
    rng = np.random.default_rng(0)
    data = {"x": rng.normal(size=(37, 8)).astype(np.float32), "y": rng.normal(size=37).astype(np.float32),
            "label": rng.integers(0, 3, 37)}
    state, history = mtl.fit(hard_sharing(MLP((16,)), tasks), tasks, data, validation=data, epochs=2, batch_size=8,
                             seed=4, input_key="x", optimizer=optax.adam(1e-2), progress=False)
    for key, values in history.items():
        np.testing.assert_allclose(two["history"][key], values, rtol=1e-5, atol=1e-6, err_msg=key)
    params = np.load(out)
    for i, leaf in enumerate(jax.tree.leaves(jax.device_get(state.params))):
        np.testing.assert_allclose(params[f"arr_{i}"], leaf, rtol=1e-5, atol=1e-6)


def test_the_connection_arguments_are_checked_before_jax_starts():
    assert distributed.initialize() is False
    assert distributed.writes_files() and distributed.process_count() == 1
    for kwargs, message in (({"coordinator": "localhost:1234"}, "missing \\['num_processes', 'process_id'\\]"),
                            ({"coordinator": "localhost", "num_processes": 2, "process_id": 0}, "HOST:PORT"),
                            ({"coordinator": "h:1", "num_processes": 2, "process_id": 2}, "not below num_processes"),
                            ({"coordinator": "h:1", "num_processes": 0, "process_id": 0}, "num_processes must be"),
                            ({"coordinator": "h:1", "num_processes": 2, "process_id": 0, "auto": True}, "not both")):
        with pytest.raises(ValueError, match=message):
            distributed.initialize(**kwargs)
