"""What happens when a user makes an ordinary mistake: nothing is lost, the workdir is left as it was,
and the command says what was wrong in one line (the README's "what happens when..." table).

The CLI runs in this process (``mtl_jax.cli.main``), except where a second process is the point.
"""
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mtl_jax as mtl
from mtl_jax import cli
from mtl_jax.experiment import load_run, restore_params, train_and_evaluate
from mtl_jax.config import load_config
from mtl_jax.files import atomic_write
from mtl_jax.models import MLP, hard_sharing
from mtl_jax.train.checkpoint import Checkpointer
from mtl_jax.train.monitor import Monitor
from mtl_jax.train.workdir_lock import LOCK_FILE, WorkdirInUse
from mtl_jax.train.writers import read_rows
from mtl_jax.weighting import static
from mtl_jax.balancing import observed

from conftest import toy_regression_classification

CONFIG = "experiments/configs/seed_cnn.py"
TINY = ["--set", "data.train_size=96", "--set", "data.validation_size=40", "--set", "data.test_size=40",
        "--set", "batch_size=16", "--set", "eval_batch_size=40", "--set", "log_every_steps=2",
        "--set", "checkpoint_every_steps=4", "--set", "tensorboard=False", "--set", "plots=False"]
TASKS = (mtl.regression("y"), mtl.classification("label", 3, weight=0.5))
MODEL = hard_sharing(MLP((16,)), TASKS)
DATA = toy_regression_classification(40, seed=1)


def snapshot(folder):
    """Every file under ``folder`` with a hash of its bytes: equal snapshots, untouched folder."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def mtl_jax(capsys, *args):
    """Runs the CLI in this process: ``(exit code, stdout, stderr)``."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return exit_.value.code, out, err


def refused(capsys, *args, message):
    code, _, err = mtl_jax(capsys, *args)
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.startswith("mtl-jax: error: ")]
    assert len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in err and "Event loop is closed" not in err and "TensorStore" not in err, err
    return lines[0]


@pytest.fixture(autouse=True)
def _data(monkeypatch, data_dir):
    monkeypatch.setenv("MTL_JAX_DATA_DIR", str(data_dir))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir):
    """A finished 2-epoch run of the seed config on tiny data (checkpoints kept at steps 6, 8, 12; the best apart)."""
    os.environ.setdefault("MTL_JAX_DATA_DIR", str(data_dir))
    workdir = tmp_path_factory.mktemp("trained") / "run"
    config = load_config(CONFIG, [t for t in TINY if t != "--set"] + ["epochs=2"])
    train_and_evaluate(config, workdir, progress=False, data_dir=data_dir)
    return workdir


@pytest.fixture
def run(trained, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    return copy


def test_a_refused_resume_changes_nothing_and_a_later_resume_continues(run, capsys):
    before = snapshot(run)
    refused(capsys, "train", "--config", CONFIG, *TINY, "--set", "epochs=2", "--set", "head_hidden=(32,)",
            "--workdir", run, "--resume", message="cannot resume")
    assert snapshot(run) == before  # config.json included: the refused config was not written
    code, out, _ = mtl_jax(capsys, "eval", "--workdir", run, "--checkpoint", "latest")
    assert code == 0 and json.loads(out)
    assert {k: v for k, v in snapshot(run).items() if k != "eval_test.json"} == before
    rows = read_rows(run / "metrics.jsonl")
    code, _, err = mtl_jax(capsys, "train", "--config", CONFIG, *TINY, "--set", "epochs=3", "--workdir", run,
                           "--resume", "--quiet")
    assert code == 0, err
    resumed = read_rows(run / "metrics.jsonl")
    assert resumed[:len(rows)] == rows and resumed[-1]["step"] == 18  # continued from step 12, not from 0


def test_eval_of_a_checkpoint_that_does_not_fit_the_config_moves_nothing(run, capsys):
    config = json.loads((run / "config.json").read_text())
    config["head_hidden"] = [32]
    (run / "config.json").write_text(json.dumps(config))
    before = snapshot(run)
    for which in ("latest", "best"):
        refused(capsys, "eval", "--workdir", run, "--checkpoint", which, message="does not fit this configuration")
        refused(capsys, "predict", "--workdir", run, "--checkpoint", which, "--output", run.parent / "p.csv",
                message="does not fit this configuration")
    assert snapshot(run) == before
    assert not (run / "corrupt").exists()


def _damage(checkpoint):
    for data_file in (checkpoint / "state").rglob("d/*"):
        data_file.write_bytes(b"garbage")


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_damaged_latest_checkpoint_is_skipped_by_eval_and_set_aside_only_by_train(run, capsys):
    _damage(run / "checkpoints" / "12")
    before = snapshot(run)
    with pytest.warns(RuntimeWarning, match="checkpoints/12 is unreadable.*using the previous one"):
        code, out, err = mtl_jax(capsys, "eval", "--workdir", run, "--checkpoint", "latest")
    assert code == 0 and json.loads((run / "eval_test.json").read_text())["step"] == 8
    assert "Event loop is closed" not in err
    assert {k: v for k, v in snapshot(run).items() if k != "eval_test.json"} == before
    with pytest.warns(RuntimeWarning, match="moved to .*corrupt/12"):
        code, _, err = mtl_jax(capsys, "train", "--config", CONFIG, *TINY, "--set", "epochs=2", "--workdir", run,
                               "--resume", "--quiet")
    assert code == 0, err
    assert (run / "corrupt" / "12").is_dir() and Checkpointer(run).steps()[-1] == 12  # trained again from 8


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_damaged_best_checkpoint_is_one_line_offering_the_latest(run, capsys):
    (best,) = (run / "best").iterdir()
    _damage(best)
    before = snapshot(run)
    line = refused(capsys, "eval", "--workdir", run, message="is unreadable")
    assert "--checkpoint latest" in line and len(line) < 500
    refused(capsys, "predict", "--workdir", run, "--output", run.parent / "p.csv", message="--checkpoint latest")
    assert snapshot(run) == before
    code, _, _ = mtl_jax(capsys, "eval", "--workdir", run, "--checkpoint", "latest")
    assert code == 0
    # In a process of its own, nothing of the failed read is printed after the error either.
    process = subprocess.run([sys.executable, "-m", "mtl_jax.cli", "eval", "--workdir", str(run)],
                             capture_output=True, text=True, timeout=300, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert process.returncode == 2
    noise = [line for line in process.stderr.splitlines() if not line.startswith("WARNING:absl:Using custom data")]
    assert len(noise) == 1 and noise[0].startswith("mtl-jax: error: ") and "--checkpoint latest" in noise[0], noise


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_resume_without_any_usable_checkpoint_keeps_the_logs_and_refuses(run, capsys):
    for checkpoint in (run / "checkpoints").iterdir():
        _damage(checkpoint)
    rows, history = read_rows(run / "metrics.jsonl"), (run / "history.json").read_text()
    with pytest.warns(RuntimeWarning, match="unreadable"):
        refused(capsys, "train", "--config", CONFIG, *TINY, "--set", "epochs=2", "--workdir", run, "--resume",
                message="no usable checkpoint")
    assert read_rows(run / "metrics.jsonl") == rows and (run / "history.json").read_text() == history
    assert sorted(p.name for p in (run / "corrupt").iterdir()) == ["12", "6", "8"]
    refused(capsys, "train", "--config", CONFIG, *TINY, "--set", "epochs=2", "--workdir", run, "--resume",
            message="no usable checkpoint")  # and again: the set-aside ones still say a run was here


def test_results_never_call_the_latest_state_the_best(tmp_path, data_dir, monkeypatch):
    monkeypatch.setattr(Monitor, "update", lambda self, state, value, step: (state, False))
    config = load_config(CONFIG, [t for t in TINY if t != "--set"] + ["epochs=1"])
    results = train_and_evaluate(config, tmp_path / "run", progress=False, data_dir=data_dir)
    assert results["best"] is None and results["best_step"] is None and "no best checkpoint" in results["best_note"]
    restored = restore_params(load_run(tmp_path / "run"), tmp_path / "run", "best")
    assert restored.checkpoint == "latest" and restored.step == 6


def _hold_lock(workdir):
    code = textwrap.dedent(f"""
        import sys, time
        from mtl_jax.train.workdir_lock import workdir_lock
        with workdir_lock({str(workdir)!r}):
            print("locked", flush=True)
            time.sleep(600)
    """)
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "locked"
    return process


def test_one_writer_per_workdir_and_a_stale_lock_is_reported_and_taken_over(tmp_path):
    workdir = tmp_path / "run"
    holder = _hold_lock(workdir)
    try:
        with pytest.raises(WorkdirInUse, match=rf"in use by process {holder.pid} on host .* \(since "):
            mtl.fit(MODEL, TASKS, DATA, epochs=1, batch_size=8, input_key="x", progress=False, workdir=workdir)
        assert os.listdir(workdir) == [LOCK_FILE]  # the refused run wrote nothing
    finally:
        holder.send_signal(signal.SIGKILL)  # dies holding it: the kernel releases the lock, the file stays
        holder.wait()
    assert (workdir / LOCK_FILE).exists()
    with pytest.warns(RuntimeWarning, match=rf"stale lock left by process {holder.pid}"):
        mtl.fit(MODEL, TASKS, DATA, epochs=1, batch_size=8, input_key="x", progress=False, workdir=workdir,
                tensorboard=False)
    assert not (workdir / LOCK_FILE).exists() and Checkpointer(workdir).steps() == [5]


@pytest.mark.parametrize("policy", ["raise", "skip"])
def test_an_overflowing_update_is_never_applied_nor_checkpointed(tmp_path, policy):
    """Losses and gradients stay finite; from step 5 on, SGD's step of 1e38 overflows the parameters."""
    optimizer = optax.sgd(lambda count: jnp.where(count >= 4, 1e38, 1e-2))
    options = dict(epochs=2, batch_size=8, input_key="x", progress=False, optimizer=optimizer, workdir=tmp_path,
                   checkpoint_every_steps=3, tensorboard=False, nonfinite=policy)
    if policy == "raise":
        with pytest.raises(FloatingPointError, match=r"non-finite update .* at step 5 .*the last checkpoint is step 3"):
            mtl.fit(MODEL, TASKS, DATA, **options)
    else:
        state, history = mtl.fit(MODEL, TASKS, DATA, **options)
        assert history["skipped_steps"][0] == 1 and history["skipped_steps"][1] >= 2  # steps with large gradients
        assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(jax.device_get(state)))
    checkpointer = Checkpointer(tmp_path, read_only=True)
    for step in checkpointer.steps():
        state = checkpointer.restore_step(step, jax.eval_shape(
            lambda: mtl.train.create_train_state(MODEL, TASKS, optimizer, static((1.0, 0.5)), DATA["x"][:1]))).state
        assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(jax.device_get(state))), step
    checkpointer.close()


def test_switching_gradient_diagnostics_on_resumes_from_the_latest_checkpoint(tmp_path):
    options = dict(epochs=2, batch_size=8, input_key="x", progress=False, workdir=tmp_path, tensorboard=False,
                   checkpoint_every_steps=3, optimizer=optax.adam(1e-2))
    plain = static((1.0, 0.5))
    mtl.fit(MODEL, TASKS, DATA, weighting=plain, **{**options, "epochs": 1, "checkpoint_every_steps": 3})
    shutil.rmtree(tmp_path / "checkpoints" / "5")  # as if stopped after the mid-epoch checkpoint at step 3
    (tmp_path / "history.json").unlink()
    state, history = mtl.fit(MODEL, TASKS, DATA, weighting=observed(plain, "feature"), resume=True, **options)
    assert not (tmp_path / "corrupt").exists() and int(state.step) == 10
    assert history["epoch"] == [1, 2] and "train/gradient_cosines" in history
    expected, _ = mtl.fit(MODEL, TASKS, DATA, weighting=plain, **{**options, "workdir": None})
    chex.assert_trees_all_close(jax.device_get(state.params), jax.device_get(expected.params), rtol=1e-5)


@pytest.mark.parametrize("override, message", [
    ("batch_size=0", "batch_size must be >= 1, got 0"),
    ("epochs=-1", "epochs must be >= 0, got -1"),
    ("eval_batch_size=True", "eval_batch_size must be a whole number, got True"),
])
def test_bad_counts_are_refused_before_anything_is_written(tmp_path, capsys, override, message):
    refused(capsys, "train", "--config", CONFIG, *TINY, "--set", override, "--workdir", tmp_path / "new",
            message=message)
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("option, message", [
    ({"epochs": 1.5}, "epochs must be a whole number, got 1.5"),
    ({"batch_size": 8.0}, "batch_size must be a whole number, got 8.0"),
    ({"batch_size": 0}, "batch_size must be >= 1, got 0"),
])
def test_fit_refuses_counts_that_are_not_whole_numbers(tmp_path, option, message):
    with pytest.raises(ValueError, match=message):
        mtl.fit(MODEL, TASKS, DATA, **{"input_key": "x", "progress": False, "workdir": tmp_path / "run", **option})
    assert not (tmp_path / "run").exists()


def test_a_batch_larger_than_the_split_is_clamped_with_a_warning(tmp_path):
    with pytest.warns(UserWarning, match="batch_size 4096 is larger than the 40 training examples"):
        state, history = mtl.fit(MODEL, TASKS, DATA, epochs=2, batch_size=4096, input_key="x", progress=False)
    assert int(state.step) == 2 and len(history["epoch"]) == 2


def test_string_or_object_inputs_and_targets_are_refused_before_the_workdir_is_made(tmp_path):
    for key, value in (("x", DATA["x"].astype(str)), ("x", DATA["x"].astype(object)), ("y", DATA["y"].astype(str))):
        with pytest.raises(ValueError, match=rf"'(input|target) {key}' holds .* values"):
            mtl.fit(MODEL, TASKS, {**DATA, key: value}, epochs=1, input_key="x", progress=False,
                    workdir=tmp_path / "run")
        assert not (tmp_path / "run").exists()


def test_predict_refuses_empty_string_and_non_numpy_inputs(run, capsys, tmp_path):
    before = snapshot(run)
    np.save(tmp_path / "empty.npy", np.zeros((0, 64, 64, 3), np.float32))
    np.save(tmp_path / "strings.npy", np.array([["a"] * 3] * 2))
    np.save(tmp_path / "wrong.npy", np.zeros((2, 32, 32, 3), np.float32))
    (tmp_path / "text.npy").write_text("1,2,3\n")
    for name, message in (("empty.npy", "holds no examples"), ("strings.npy", "the model takes numbers"),
                          ("wrong.npy", "expects (N, 64, 64, 3)"), ("text.npy", "is not a NumPy .npy or .npz file"),
                          ("missing.npy", "does not exist")):
        refused(capsys, "predict", "--workdir", run, "--inputs", tmp_path / name, "--output", tmp_path / "p.csv",
                message=message)
    assert not (tmp_path / "p.csv").exists() and snapshot(run) == before
    with pytest.raises(ValueError, match="no inputs"):
        mtl.predict(MODEL, TASKS, mtl.train.create_train_state(
            MODEL, TASKS, optax.adam(1e-3), static((1.0, 0.5)), DATA["x"][:1]).params, DATA["x"][:0])


@pytest.mark.parametrize("body, message", [
    ("def get_config(:\n    pass\n", "bad.py', line 1: SyntaxError"),
    ("def get_config():\n    return {}['missing']\n", "bad.py': KeyError: 'missing'"),
    ("x = 1\n", "defines no get_config()"),
])
def test_a_broken_config_file_is_one_line_and_debug_shows_the_traceback(tmp_path, capsys, body, message):
    (tmp_path / "bad.py").write_text(body)
    refused(capsys, "train", "--config", tmp_path / "bad.py", "--workdir", tmp_path / "run", message=message)
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError):
        cli.main(["--debug", "train", "--config", str(tmp_path / "bad.py"), "--workdir", str(tmp_path / "run")])


def test_atomic_writes_keep_the_old_file_on_failure_and_leave_no_temporary_file(tmp_path):
    target = tmp_path / "results.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as file:
            file.write("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["results.json"]
