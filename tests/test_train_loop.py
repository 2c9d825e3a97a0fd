"""The loop with hooks (mtl_jax.train.train_loop, mtl_jax.train.hooks) and iterables of batches
(mtl_jax.data.batch_streams): what hooks see and when, that their rows and bookkeeping are logged,
checkpointed and resumed, that the host reads outputs a step late, and that batches made by the
user train exactly like the same batches made from arrays."""
import json

import chex
import jax
import numpy as np
import optax
import pytest

import mtl_jax as mtl
from mtl_jax.data.batching import epoch_order
from mtl_jax.models import MLP, hard_sharing
from mtl_jax.train import fit_seeds, make_train_step
from mtl_jax.train.checkpoint import Checkpointer, abstract_of
from mtl_jax.train.hooks import Hook
from mtl_jax.train.writers import read_rows

from conftest import assert_resumes_bitwise, toy_regression_classification

TASKS = (mtl.regression("y"), mtl.classification("label", 3, weight=0.5))
MODEL = hard_sharing(MLP((16,)), TASKS)
DATA = toy_regression_classification(40, seed=2)  # 5 steps of 8 per epoch
OPTIONS = {"batch_size": 8, "input_key": "x", "progress": False, "optimizer": optax.adam(1e-2), "plots": False}


class Recorder(Hook):
    """Records every event; keeps a step count in run.meta and reports it in each row."""

    def __init__(self, stop_at=None, fail_at=None):
        self.events, self.stop_at, self.fail_at = [], stop_at, fail_at

    def begin(self, run):
        run.meta.setdefault("recorder", {"outputs_seen": 0})
        self.events.append(("begin", run.step))

    def before_step(self, run, batch):
        self.events.append(("before_step", run.step, batch["x"].shape))

    def after_step(self, run):
        self.events.append(("after_step", run.step))
        if run.step == self.fail_at:
            raise RuntimeError("hook failed")

    def on_outputs(self, run, step, outputs):
        assert isinstance(outputs["loss_sum"], np.ndarray)  # host values, not device arrays
        run.meta["recorder"]["outputs_seen"] += 1
        self.events.append(("on_outputs", step, run.step))

    def due(self, run):
        return run.step == self.stop_at

    def report(self, run, row, end_of_epoch):
        row["recorder/outputs_seen"] = run.meta["recorder"]["outputs_seen"]
        self.events.append(("report", run.step, end_of_epoch))

    def at_sync(self, run, row, end_of_epoch):
        self.events.append(("at_sync", run.step, end_of_epoch, dict(row)))
        if run.step == self.stop_at:
            run.request_stop()

    def end(self, run, error):
        self.events.append(("end", run.step, error))


def _kinds(events, kind):
    return [e for e in events if e[0] == kind]


def test_hooks_see_every_step_once_in_order_and_their_rows_are_logged(tmp_path):
    recorder = Recorder()
    _, history = mtl.fit(MODEL, TASKS, DATA, epochs=2, workdir=tmp_path, hooks=[recorder], **OPTIONS)
    events = recorder.events
    assert events[0] == ("begin", 0) and events[-1] == ("end", 10, None)
    assert [e[1] for e in _kinds(events, "before_step")] == list(range(10))
    assert [e[1] for e in _kinds(events, "on_outputs")] == list(range(1, 11))  # every step once, in order
    assert [(e[1], e[2]) for e in _kinds(events, "at_sync")] == [(5, True), (10, True)]
    # Outputs delivered between sync points come a step late: the host never waited for the newest step.
    syncs = {e[1] for e in _kinds(events, "at_sync")}
    assert all(now > step for _, step, now in _kinds(events, "on_outputs") if now not in syncs)
    # The hook's row values join the epoch row: history, metrics.jsonl and the at_sync row.
    assert history["recorder/outputs_seen"] == [5, 10]
    epoch_rows = [r for r in read_rows(tmp_path / "metrics.jsonl") if "epoch" in r]
    assert [r["recorder/outputs_seen"] for r in epoch_rows] == [5, 10]
    first_row = _kinds(events, "at_sync")[0][3]
    assert first_row["epoch"] == 1 and "train/y/rmse" in first_row and "train/label/accuracy" in first_row


def test_a_hook_that_stops_the_run_is_checkpointed_there_and_a_resume_does_not_train_on(tmp_path):
    recorder = Recorder(stop_at=7)
    state, history = mtl.fit(MODEL, TASKS, DATA, epochs=3, workdir=tmp_path, hooks=[recorder], **OPTIONS)
    assert int(state.step) == 7 and history["epoch"] == [1]
    assert Checkpointer(tmp_path, read_only=True).steps() == [5, 7]
    meta = json.loads((tmp_path / "checkpoints" / "7" / "meta" / "metadata").read_text())
    assert meta["recorder"] == {"outputs_seen": 7} and meta["stopped_early"]
    again = Recorder()
    resumed, resumed_history = mtl.fit(MODEL, TASKS, DATA, epochs=3, workdir=tmp_path, resume=True, hooks=[again],
                                       **OPTIONS)
    assert int(resumed.step) == 7 and resumed_history == history
    assert not _kinds(again.events, "before_step")


def test_a_hooks_bookkeeping_resumes_with_the_run(tmp_path):
    """A hook's entries in run.meta are saved with each checkpoint and restored: the resumed run's
    rows equal the uninterrupted run's."""
    assert_resumes_bitwise(MODEL, TASKS, DATA, tmp_path, hooks=[Recorder()])
    resumed_rows = [r for r in read_rows(tmp_path / "b" / "metrics.jsonl") if "epoch" in r]
    assert [r["recorder/outputs_seen"] for r in resumed_rows] == [5, 10]


def test_an_error_in_a_hook_ends_every_hook_and_leaves_a_resumable_workdir(tmp_path):
    first, second = Recorder(fail_at=7), Recorder()
    with pytest.raises(RuntimeError, match="hook failed"):
        mtl.fit(MODEL, TASKS, DATA, epochs=2, workdir=tmp_path, hooks=[first, second], checkpoint_every_steps=3,
                **OPTIONS)
    for hook in (first, second):
        assert hook.events[-1][0] == "end" and isinstance(hook.events[-1][2], RuntimeError)
    assert not (tmp_path / "history.json").exists()  # the finished run's files are not written
    state, _ = mtl.fit(MODEL, TASKS, DATA, epochs=2, workdir=tmp_path, resume=True, **OPTIONS)
    assert int(state.step) == 10


def test_something_that_is_not_a_hook_is_refused():
    with pytest.raises(TypeError, match="not a mtl_jax.train.hooks.Hook"):
        mtl.fit(MODEL, TASKS, DATA, epochs=1, hooks=[print], **OPTIONS)


def _epoch_batches(data, seed, batch_size=8, pad=False):
    """The epoch's batches as a user would slice them (the last one short, no mask)."""
    def of_epoch(epoch):
        order = epoch_order(len(data["x"]), seed, epoch)
        return [{k: v[order[i:i + batch_size]] for k, v in data.items()} for i in range(0, len(order), batch_size)]
    return of_epoch


def test_batches_from_a_function_of_the_epoch_train_exactly_like_arrays():
    data = toy_regression_classification(37, seed=3)  # the last batch of each epoch has 5 examples
    expected_state, expected = mtl.fit(MODEL, TASKS, data, epochs=2, validation=data, seed=4, **OPTIONS)
    state, history = mtl.fit(MODEL, TASKS, _epoch_batches(data, 4), epochs=2, validation=data, seed=4, **OPTIONS)
    chex.assert_trees_all_equal(jax.device_get(state), jax.device_get(expected_state))
    assert history == expected


def _part_batches(data, seed, batch_size=8, seen=None):
    """``(epoch, shard) -> batches``: this process's rows of every batch of :func:`_epoch_batches`."""
    def of_epoch(epoch, shard):
        index, count = shard
        if seen is not None:
            seen.add(shard)
        return [{k: v[index * len(v) // count:(index + 1) * len(v) // count] for k, v in batch.items()}
                for batch in _epoch_batches(data, seed, batch_size)(epoch)]
    return of_epoch


def test_a_function_of_the_epoch_and_the_shard_reads_this_process_part():
    """One process: the function is asked for part (0, 1), the whole batch; the other process
    counts are tests/test_distributed.py's."""
    data = toy_regression_classification(37, seed=3)
    seen = set()
    expected_state, expected = mtl.fit(MODEL, TASKS, _epoch_batches(data, 4), epochs=2,
                                       validation=_epoch_batches(data, None), seed=4, **OPTIONS)
    state, history = mtl.fit(MODEL, TASKS, _part_batches(data, 4, seen=seen), epochs=2,
                             validation=_part_batches(data, None, seen=seen), seed=4, **OPTIONS)
    chex.assert_trees_all_equal(jax.device_get(state), jax.device_get(expected_state))
    assert history == expected and seen == {(0, 1)}
    assert mtl.evaluate(MODEL, TASKS, state.params, _part_batches(data, None), input_key="x") == pytest.approx(
        mtl.evaluate(MODEL, TASKS, state.params, data, input_key="x"), rel=1e-5)


def test_a_part_of_every_batch_read_by_one_of_several_processes_needs_a_mesh(monkeypatch):
    from mtl_jax.data import batch_streams

    monkeypatch.setattr(batch_streams, "process_position", lambda: (1, 2))  # as process 1 of 2 would see it
    data = toy_regression_classification(32, seed=3)
    parts = _part_batches(data, 0)
    with pytest.raises(ValueError, match=r"reads one part of every batch in each of 2 processes: give a mesh"):
        mtl.fit(MODEL, TASKS, parts, epochs=1, **OPTIONS)
    with pytest.raises(ValueError, match="predict reads whole batches"):
        mtl.predict(MODEL, TASKS, {}, parts, input_key="x")
    with pytest.raises(ValueError, match="fit_seeds trains in each process on its own device"):
        fit_seeds(MODEL, TASKS, parts, seeds=[0, 1], epochs=1, input_key="x", progress=False)


def test_a_list_of_batches_is_read_again_each_epoch_and_a_short_batch_does_not_recompile():
    data = toy_regression_classification(37, seed=3)
    listed = _epoch_batches(data, None)(0)
    assert [len(b["x"]) for b in listed] == [8, 8, 8, 8, 5]
    options = {**OPTIONS, "optimizer": optax.adam(1e-2)}  # a step of its own: no other test compiles it
    state, history = mtl.fit(MODEL, TASKS, listed, epochs=3, seed=4, **options)
    assert int(state.step) == 15 and len(history["epoch"]) == 3
    expected_state, _ = mtl.fit(MODEL, TASKS, listed * 3, epochs=1, seed=4, **options)
    chex.assert_trees_all_equal(jax.device_get(state.params), jax.device_get(expected_state.params))
    step = make_train_step(MODEL, TASKS, options["optimizer"], mtl.weighting.static((1.0, 0.5)), "x", None)
    assert step._cache_size() == 1  # the short batch was padded to the first one's shape


def test_a_generator_trains_one_epoch_and_is_refused_for_more():
    data = toy_regression_classification(37, seed=3)
    state, history = mtl.fit(MODEL, TASKS, iter(_epoch_batches(data, 0)(0)), epochs=1, **OPTIONS)
    assert int(state.step) == 5 and history["epoch"] == [1]
    with pytest.raises(ValueError, match="iterator of batches, which can be read only once"):
        mtl.fit(MODEL, TASKS, iter(_epoch_batches(data, 0)(0)), epochs=2, **OPTIONS)


def test_bad_iterables_of_batches_are_named():
    data = toy_regression_classification(16, seed=3)
    growing = [{k: v[:4] for k, v in data.items()}, data]
    with pytest.raises(ValueError, match="batch 1 of epoch 1 has 16 examples, more than the first batch's 4"):
        mtl.fit(MODEL, TASKS, growing, epochs=1, **OPTIONS)
    ragged = [{"x": data["x"], "y": data["y"][:3], "label": data["label"]}]
    with pytest.raises(ValueError, match="must share their first dimension"):
        mtl.fit(MODEL, TASKS, ragged, epochs=1, **OPTIONS)
    bad_label = [{**data, "label": np.full(16, 7)}]
    with pytest.raises(ValueError, match="label"):
        mtl.fit(MODEL, TASKS, bad_label, epochs=1, **OPTIONS)
    with pytest.raises(ValueError, match="yielded no batch"):
        mtl.fit(MODEL, TASKS, [], epochs=1, **OPTIONS)


def test_a_run_on_batches_from_a_function_resumes_mid_epoch_bitwise(tmp_path):
    assert_resumes_bitwise(MODEL, TASKS, _epoch_batches(DATA, 7), tmp_path)


def test_evaluate_and_predict_take_iterables_of_batches():
    data = toy_regression_classification(37, seed=3)
    state, _ = mtl.fit(MODEL, TASKS, data, epochs=1, **OPTIONS)
    listed = _epoch_batches(data, None)(0)
    assert mtl.evaluate(MODEL, TASKS, state.params, listed, input_key="x") == pytest.approx(
        mtl.evaluate(MODEL, TASKS, state.params, data, input_key="x"), rel=1e-5)
    streamed = mtl.predict(MODEL, TASKS, state.params, listed, input_key="x")
    direct = mtl.predict(MODEL, TASKS, state.params, data["x"])
    assert streamed["y"].shape == direct["y"].shape == (37,)
    np.testing.assert_allclose(streamed["y"], direct["y"], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(streamed["label"]["labels"], direct["label"]["labels"])


def test_asynchronous_and_synchronous_checkpoints_hold_the_same_state(tmp_path):
    options = {**OPTIONS, "epochs": 2, "checkpoint_every_steps": 2, "keep_checkpoints": 10, "tensorboard": False}
    state, _ = mtl.fit(MODEL, TASKS, DATA, workdir=tmp_path / "async", **options)
    mtl.fit(MODEL, TASKS, DATA, workdir=tmp_path / "sync", async_checkpoints=False, **options)
    steps = Checkpointer(tmp_path / "async", read_only=True).steps()
    assert steps == Checkpointer(tmp_path / "sync", read_only=True).steps() == [2, 4, 5, 6, 8, 10]
    for step in steps:
        a = Checkpointer(tmp_path / "async", read_only=True).restore_step(step, abstract_of(state))
        b = Checkpointer(tmp_path / "sync", read_only=True).restore_step(step, abstract_of(state))
        chex.assert_trees_all_equal(jax.device_get(a.state), jax.device_get(b.state))
        assert a.meta == b.meta
