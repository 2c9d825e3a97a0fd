"""fit() with a workdir: checkpoints, exact resumption, logs, best checkpoint, early stopping, failures."""
import json
import shutil
import struct

import chex
import jax
import numpy as np
import optax
import pytest

import mtl_jax as mtl
from mtl_jax.data.batching import epoch_order
from mtl_jax.models import MLP, hard_sharing
from mtl_jax.train import create_train_state, make_train_step
from mtl_jax.train.checkpoint import Checkpointer
from mtl_jax.train.writers import read_rows
from mtl_jax.weighting import static

from conftest import toy_regression_classification

TASKS = (mtl.regression("y"), mtl.classification("label", 3, weight=0.5))
MODEL = hard_sharing(MLP((16,)), TASKS)
OPTIMIZER = optax.adam(1e-2)
DATA = toy_regression_classification(40, seed=1)
VALIDATION = toy_regression_classification(24, seed=2)


def _fit(workdir, model=MODEL, tasks=TASKS, data=DATA, **kwargs):
    kwargs = {"epochs": 3, "batch_size": 8, "input_key": "x", "progress": False, "optimizer": OPTIMIZER,
              "validation": VALIDATION, "checkpoint_every_steps": 3, "keep_checkpoints": 20,
              "log_every_steps": 1, "best_metric": "y/rmse", "tensorboard": False, **kwargs}
    return mtl.fit(model, tasks, data, workdir=workdir, **kwargs)


def _host(tree):
    return jax.device_get(tree)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """An uninterrupted run: 3 epochs of 5 steps, checkpoints every 3 steps and at epoch ends."""
    workdir = tmp_path_factory.mktemp("run")
    state, history = _fit(workdir)
    return workdir, _host(state), history


def _truncated_copy(finished_run, tmp_path, keep_up_to):
    """The finished run's workdir as if killed just after checkpoint ``keep_up_to``."""
    source = finished_run[0]
    target = tmp_path / "copy"
    shutil.copytree(source, target)
    for step_dir in (target / "checkpoints").iterdir():
        if int(step_dir.name) > keep_up_to:
            shutil.rmtree(step_dir)
    return target


def test_checkpoints_at_every_n_steps_and_epoch_ends(finished_run):
    workdir, state, history = finished_run
    assert Checkpointer(workdir).steps() == [3, 5, 6, 9, 10, 12, 15]
    assert history["epoch"] == [1, 2, 3]
    assert int(state.step) == 15


def test_a_relative_workdir_saves_and_resumes_like_an_absolute_one(finished_run, tmp_path, monkeypatch):
    """orbax refuses relative checkpoint paths; `make demo` passes one (runs/seed_cnn)."""
    monkeypatch.chdir(tmp_path)
    state, history = _fit("runs/relative")
    chex.assert_trees_all_equal(_host(state), finished_run[1])
    assert Checkpointer("runs/relative").steps() == [3, 5, 6, 9, 10, 12, 15]
    assert (tmp_path / "runs/relative/best").is_dir()
    _, resumed = _fit("runs/relative", resume=True, epochs=4)
    assert resumed["epoch"] == [1, 2, 3, 4]


@pytest.mark.parametrize("checkpoint", [6, 10])  # mid-epoch (outputs of the epoch so far saved) and epoch end
def test_resuming_reproduces_the_uninterrupted_run_bitwise(finished_run, tmp_path, checkpoint):
    workdir, expected, history = finished_run
    copy = _truncated_copy(finished_run, tmp_path, checkpoint)
    state, resumed_history = _fit(copy, resume=True)
    chex.assert_trees_all_equal(_host(state), expected)
    assert resumed_history == history
    # rows logged after the checkpoint by the "killed" run were dropped and written again identically
    assert read_rows(copy / "metrics.jsonl") == read_rows(workdir / "metrics.jsonl")
    assert json.loads((copy / "history.json").read_text()) == json.loads((workdir / "history.json").read_text())


def _meta_bytes(workdir, step):
    return sum(f.stat().st_size for f in (workdir / "checkpoints" / str(step) / "meta").rglob("*") if f.is_file())


def test_a_checkpoint_does_not_grow_with_the_position_in_the_epoch(tmp_path):
    """The epoch's statistics are a fixed-size accumulator in the checkpoint's meta, not every step's outputs."""
    data = toy_regression_classification(96, seed=3)
    _fit(tmp_path / "run", data=data, epochs=1, checkpoint_every_steps=1, validation=None, best_metric=None)
    sizes = [_meta_bytes(tmp_path / "run", step) for step in (1, 6, 11)]
    assert max(sizes) - min(sizes) < 200, sizes  # digits of the sums vary, nothing per step
    assert not any(p.name == "epoch_outputs" for p in (tmp_path / "run" / "checkpoints").rglob("*"))


def test_a_mid_epoch_checkpoint_of_an_older_version_resumes_exactly(finished_run, tmp_path):
    """Checkpoints written before the accumulator kept every step's outputs of the epoch (item
    ``epoch_outputs``); resuming one folds them and ends as the uninterrupted run."""
    import orbax.checkpoint as ocp

    workdir, expected, history = finished_run
    copy = _truncated_copy(finished_run, tmp_path, 5)  # the end of epoch 1
    state, _ = _fit(copy, resume=True, epochs=1)  # nothing to do: the state at step 5
    step = make_train_step(MODEL, TASKS, OPTIMIZER, static([1.0, 0.5]), "x")
    order = epoch_order(40, 0, 1)
    outputs = []
    batch = {**{k: v[order[:8]] for k, v in DATA.items()}, "_valid": np.ones(8, np.float32)}
    state, out = step(state, batch)  # one step into epoch 2, saved at step 6 as the older fit did
    outputs.append(jax.device_get(out))
    restored = Checkpointer(copy).restore_latest(jax.eval_shape(lambda: state))
    meta = dict(restored.meta, epoch=1, step_in_epoch=1)
    del meta["epoch_stats"]
    target = copy / "checkpoints"
    manager = ocp.CheckpointManager(target, item_handlers={
        "state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler(),
        "epoch_outputs": ocp.StandardCheckpointHandler()})
    stacked = jax.tree.map(lambda *leaves: np.stack(leaves), *outputs)
    manager.save(6, args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta),
                                            epoch_outputs=ocp.args.StandardSave(stacked)))
    manager.wait_until_finished()
    manager.close()
    resumed, resumed_history = _fit(copy, resume=True)
    chex.assert_trees_all_equal(_host(resumed), expected)
    np.testing.assert_allclose(resumed_history["train/y/rmse"], history["train/y/rmse"], rtol=1e-6)


def test_a_workdir_holding_a_run_is_refused_without_resume(finished_run):
    with pytest.raises(FileExistsError, match="already holds a run"):
        _fit(finished_run[0])


def test_resuming_with_other_tasks_or_shapes_is_refused(finished_run, tmp_path):
    copy = _truncated_copy(finished_run, tmp_path, 15)
    with pytest.raises(ValueError, match=r"cannot resume .*array shapes differ.*Dense_0"):
        _fit(copy, model=hard_sharing(MLP((32,)), TASKS), resume=True)
    tasks = (TASKS[0], mtl.classification("label", 4))
    with pytest.raises(ValueError, match=r"task label: .*'output_dim': 3.* -> .*'output_dim': 4"):
        _fit(copy, model=hard_sharing(MLP((16,)), tasks), tasks=tasks, resume=True)
    tasks = (TASKS[0],)
    with pytest.raises(ValueError, match=r"tasks were \['y', 'label'\], now \['y'\]"):
        _fit(copy, model=hard_sharing(MLP((16,)), tasks), tasks=tasks, resume=True)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # orbax's reader, torn down
def test_a_corrupted_latest_checkpoint_falls_back_to_the_previous_one(finished_run, tmp_path):
    workdir, expected, _ = finished_run
    copy = _truncated_copy(finished_run, tmp_path, 15)
    for data_file in (copy / "checkpoints" / "15" / "state").rglob("d/*"):
        data_file.write_bytes(b"garbage")
    (copy / "checkpoints" / "16.orbax-checkpoint-tmp-1700000000").mkdir()  # a save killed half-way
    with pytest.warns(RuntimeWarning, match="checkpoints/15 is unreadable"):
        state, _ = _fit(copy, resume=True)
    chex.assert_trees_all_equal(_host(state), expected)
    assert (copy / "corrupt" / "15").is_dir()
    assert Checkpointer(copy).steps()[-1] == 15  # written again, from step 12


def test_the_best_checkpoint_is_the_best_validation_epoch(finished_run):
    workdir, _, history = finished_run
    best_epoch = int(np.argmin(history["validation/y/rmse"]))
    assert Checkpointer(workdir).best_steps() == [5 * (best_epoch + 1)]


def test_logs_and_plots_are_written(finished_run):
    workdir, _, history = finished_run
    rows = read_rows(workdir / "metrics.jsonl")
    steps = [r["step"] for r in rows if "train/y/step_loss" in r]
    assert steps == list(range(1, 16))
    epoch_rows = [r for r in rows if "epoch" in r]
    assert [r["step"] for r in epoch_rows] == [5, 10, 15]
    assert [r["validation/y/rmse"] for r in epoch_rows] == history["validation/y/rmse"]
    for name in ("training_progress.png", "task_weights.png"):
        assert (workdir / name).read_bytes()[:4] == b"\x89PNG"


def _tensorboard_tags(directory):
    from tensorboardX.proto import event_pb2

    tags = set()
    for path in directory.glob("events.out.tfevents.*"):
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset:offset + 8])
            event = event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
            tags |= {(v.tag, event.step) for v in event.summary.value}
            offset += 16 + length
    return tags


def test_tensorboard_events_and_evaluation_every_n_steps(tmp_path):
    _fit(tmp_path, epochs=1, eval_every_steps=2, tensorboard=True, best_metric=None)
    rows = read_rows(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows if "validation/y/rmse" in r] == [2, 4, 5]
    tags = _tensorboard_tags(tmp_path / "tensorboard")
    assert {("validation/y/rmse", 2), ("train/label/accuracy", 5), ("train/y/weight", 3)} <= tags


def test_early_stopping_stops_after_patience_evaluations_without_improvement(tmp_path):
    state, history = _fit(tmp_path, epochs=6, early_stopping_patience=2, min_delta=1e9)
    assert history["epoch"] == [1, 2, 3]  # epoch 1 sets the best; 2 and 3 fail to beat it by 1e9
    assert int(state.step) == 15
    again, _ = _fit(tmp_path, epochs=6, early_stopping_patience=2, min_delta=1e9, resume=True)
    assert int(again.step) == 15  # a stopped run stays stopped


def _data_with_bad_example(index):
    data = {k: v.copy() for k, v in DATA.items()}
    data["x"][index] = 3e38  # finite input, but the forward pass overflows
    return data


def _step_of(index, epoch, batch_size=8):
    position = int(np.where(epoch_order(len(DATA["x"]), 0, epoch) == index)[0][0])
    return epoch * 5 + position // batch_size + 1


def test_a_non_finite_loss_stops_training_naming_tasks_and_step_without_checkpointing_it(tmp_path):
    bad_step = _step_of(7, epoch=0)
    with pytest.raises(FloatingPointError, match=rf"task\(s\) \['y'(, 'label')?\] at step {bad_step} \(epoch 1\)"):
        _fit(tmp_path, data=_data_with_bad_example(7))
    checkpointer = Checkpointer(tmp_path)
    assert max(checkpointer.steps()) < bad_step
    abstract = jax.eval_shape(lambda: create_train_state(MODEL, TASKS, OPTIMIZER, static([1.0, 0.5]),
                                                         DATA["x"][:2]))
    restored = checkpointer.restore_latest(abstract, None)
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(_host(restored.state.params)))


def test_the_skip_policy_drops_non_finite_steps_and_counts_them(tmp_path):
    state, history = _fit(tmp_path, data=_data_with_bad_example(7), nonfinite="skip")
    assert history["skipped_steps"] == [1, 2, 3]  # the bad example is in one batch per epoch
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(_host(state.params)))
    assert all(np.isfinite(history["train/y/loss"]))
    rows = read_rows(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows if r.get("train/skipped") == 1.0] == [_step_of(7, e) for e in range(3)]


def test_a_non_finite_step_leaves_the_state_unchanged():
    step = make_train_step(MODEL, TASKS, OPTIMIZER, static([1.0, 0.5]), "x")
    state = create_train_state(MODEL, TASKS, OPTIMIZER, static([1.0, 0.5]), DATA["x"][:2])
    before = _host(state)
    batch = {k: v[:8] for k, v in _data_with_bad_example(0).items()}
    batch["_valid"] = np.ones(8, np.float32)
    after, out = step(state, batch)
    assert not bool(out["finite"])
    chex.assert_trees_all_equal(_host(after.params), before.params)
    chex.assert_trees_all_equal(_host(after.opt_state), before.opt_state)
    assert int(after.step) == 1


def test_an_unwritable_workdir_is_refused_before_training(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(PermissionError, match="is not writable"):
        _fit(blocker / "run")


def test_bad_options_are_refused_clearly(tmp_path):
    with pytest.raises(ValueError, match="not reported; choose one of"):
        _fit(tmp_path, best_metric="y/accuracy")
    with pytest.raises(ValueError, match="needs validation data"):
        _fit(tmp_path, validation=None)
    with pytest.raises(ValueError, match="nonfinite must be"):
        _fit(tmp_path, nonfinite="ignore")
