"""Multi-input MTL: a dataset per task, mixed into steps by round robin, size or temperature;
epochs, resume, absent tasks and evaluation per dataset."""
import numpy as np
import optax
import pytest

import mtl_jax as mtl
from mtl_jax.data.batching import batches, steps_per_epoch
from mtl_jax.data.task_mixture import TaskMixture
from mtl_jax.experiment import make_weighting
from mtl_jax.models import MLP, hard_sharing
from mtl_jax.weighting import uncertainty

from conftest import assert_resumes_bitwise, toy_regression_classification

TASKS = (mtl.regression("y"), mtl.classification("label", 3))
MODEL = hard_sharing(MLP((16,)), TASKS)


def _corpora(n_y=24, n_label=16, seed=0):
    """Two datasets: one labels only ``y``, the other only ``label`` (with an ``id`` per example)."""
    a = toy_regression_classification(n_y, seed=seed)
    b = toy_regression_classification(n_label, seed=seed + 1)
    a = {"x": a["x"], "y": a["y"], "id": np.arange(n_y)}
    b = {"x": b["x"], "label": b["label"], "id": 1000 + np.arange(n_label)}
    return a, b


def _mixture(sampling="proportional", **kwargs):
    a, b = _corpora(**{k: kwargs.pop(k) for k in ("n_y", "n_label") if k in kwargs})
    return TaskMixture({"y": a, "label": b}, sampling=sampling, **kwargs)


def _which(batch):
    """The dataset each step read: 0 (``y``), 1 (``label``) or both."""
    has_y, has_label = batch["y_mask"].any(), batch["label_mask"].any()
    return {(True, False): 0, (False, True): 1, (True, True): "both"}[(bool(has_y), bool(has_label))]


def _epoch(mixture, epoch, seed=0, start=0):
    return list(batches(mixture, 8, seed=seed, epoch=epoch, start_step=start))


def test_proportional_sampling_reads_every_example_of_every_dataset_once_per_epoch():
    mixture = _mixture(n_y=40, n_label=20)
    assert steps_per_epoch(mixture, 8) == 5 + 3
    for epoch in range(3):
        steps = _epoch(mixture, epoch)
        assert [_which(b) for b in steps].count(0) == 5 and [_which(b) for b in steps].count(1) == 3
        ids = np.concatenate([b["id"][b["_valid"] > 0] for b in steps])
        assert sorted(ids.tolist()) == list(range(40)) + list(range(1000, 1020))
    assert [_which(b) for b in _epoch(mixture, 0)] != [_which(b) for b in _epoch(mixture, 1)]  # a shuffled schedule


def test_a_step_carries_every_task_key_and_masks_the_tasks_its_dataset_does_not_label():
    for batch in _epoch(_mixture(), 0):
        assert set(batch) == {"x", "y", "label", "y_mask", "label_mask", "id", "_valid"}
        assert batch["x"].shape == (8, 8) and batch["label"].dtype == np.int32
        own, other = ("y", "label") if _which(batch) == 0 else ("label", "y")
        assert (batch[f"{own}_mask"] == 1).all() and (batch[f"{other}_mask"] == 0).all()
        assert (batch[other] == 0).all()


def test_round_robin_alternates_and_small_datasets_cycle():
    mixture = _mixture("round_robin", n_y=40, n_label=8)  # 5 batches and 1 batch per pass
    steps = _epoch(mixture, 0)
    assert [_which(b) for b in steps] == [0, 1, 0, 1, 0, 1]
    # the one-batch dataset is read three times: three passes, each a permutation of its 8 examples
    label_ids = [sorted(b["id"].tolist()) for b in steps if _which(b) == 1]
    assert label_ids == [list(range(1000, 1008))] * 3


@pytest.mark.parametrize("temperature,expected", [(1.0, [10, 2]), (1e9, [6, 6]), (2.0, [8, 4])])
def test_temperature_sampling_draws_datasets_in_proportion_to_size_to_the_one_over_tau(temperature, expected):
    mixture = _mixture("temperature", temperature=temperature, n_y=80, n_label=16)  # 10 and 2 batches: 12 steps
    counts = mixture.counts(8)
    assert counts.tolist() == expected and counts.sum() == 12
    # p ~ n^(1/2): 80^.5 / (80^.5 + 16^.5) = 0.691 of 12 steps -> 8.3 -> 8
    assert [_which(b) for b in _epoch(mixture, 0)].count(0) == expected[0]


def test_all_sampling_puts_a_batch_of_every_dataset_in_every_step():
    mixture = _mixture("all", n_y=24, n_label=8)
    steps = _epoch(mixture, 0)
    assert len(steps) == 3 and all(_which(b) == "both" for b in steps)
    assert all(b["x"].shape == (16, 8) for b in steps)
    assert (steps[0]["y_mask"][:8] == 1).all() and (steps[0]["y_mask"][8:] == 0).all()


@pytest.mark.parametrize("sampling", ["all", "round_robin", "proportional", "temperature"])
def test_an_epoch_resumed_mid_way_reads_the_same_batches(sampling):
    mixture = _mixture(sampling, n_y=36, n_label=12)
    for epoch in (0, 2):
        whole = _epoch(mixture, epoch, seed=5)
        for start in (1, len(whole) - 1):
            tail = _epoch(mixture, epoch, seed=5, start=start)
            assert len(tail) == len(whole) - start
            for got, want in zip(tail, whole[start:]):
                assert got.keys() == want.keys() and all(np.array_equal(got[k], want[k]) for k in got)
    other_seed = _epoch(mixture, 0, seed=6)
    assert not all(np.array_equal(a["id"], b["id"]) for a, b in zip(other_seed, _epoch(mixture, 0, seed=5)))


def test_evaluation_reads_every_dataset_once_in_order():
    steps = list(batches(_mixture(n_y=20, n_label=12), 8))
    assert [_which(b) for b in steps] == [0, 0, 0, 1, 1]
    ids = np.concatenate([b["id"][b["_valid"] > 0] for b in steps])
    assert ids.tolist() == list(range(20)) + list(range(1000, 1012))


def test_mistakes_are_named():
    a, b = _corpora()
    with pytest.raises(ValueError, match="unknown sampling 'random'"):
        TaskMixture({"y": a, "label": b}, sampling="random")
    with pytest.raises(ValueError, match="task 'y' is given two datasets"):
        TaskMixture({"y": a, ("y", "label"): b})
    with pytest.raises(KeyError, match=r"the dataset of \('label',\) has no \['label'\]"):
        TaskMixture({"y": a, "label": a})
    with pytest.raises(ValueError, match="'x' differs between the datasets"):
        TaskMixture({"y": a, "label": {**b, "x": b["x"][:, :4]}})
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        TaskMixture({"y": a, "label": b}, sampling="temperature", temperature=0)
    with pytest.raises(ValueError, match="has no examples"):
        TaskMixture({"y": a, "label": {k: v[:0] for k, v in b.items()}})
    with pytest.raises(KeyError, match="'label'"):  # a task of the model that no dataset labels
        mtl.fit(MODEL, TASKS, TaskMixture({"y": a}), epochs=1, batch_size=8, input_key="x", progress=False)


@pytest.mark.parametrize("sampling,method", [("proportional", "upgrad@parameter")])
def test_fit_trains_each_task_on_its_own_dataset_and_evaluates_each_on_its_own(sampling, method):
    a, b = _corpora(n_y=160, n_label=160)
    va, vb = _corpora(n_y=64, n_label=64, seed=7)
    train, validation = TaskMixture({"y": a, "label": b}, sampling), TaskMixture({"y": va, "label": vb})
    name, _, level = method.partition("@")
    weighting = (make_weighting("equal", TASKS, {}, steps_per_epoch=20, aggregator=name, level=level) if level
                 else make_weighting(name, TASKS, {"learning_rate": 1e-2}, steps_per_epoch=20))
    state, history = mtl.fit(MODEL, TASKS, train, validation=validation, epochs=8, batch_size=16, input_key="x",
                             progress=False, optimizer=optax.adam(1e-2), weighting=weighting)
    metrics = mtl.evaluate(MODEL, TASKS, state.params, validation, batch_size=16, input_key="x")
    assert metrics["y/rmse"] < 0.6 * float(np.std(va["y"])), metrics
    assert metrics["label/accuracy"] > 0.6, metrics  # chance: 1/3 (measured 0.73-0.8)
    # evaluation over each task's own dataset only: the same as evaluating on that dataset alone
    alone = mtl.evaluate(MODEL, TASKS[:1], state.params, va, batch_size=16, input_key="x")
    np.testing.assert_allclose(metrics["y/rmse"], alone["y/rmse"], rtol=1e-5)
    assert len(history["epoch"]) == 8


def test_fit_on_a_mixture_resumes_bitwise_with_a_task_absent_from_most_steps(tmp_path):
    a, b = _corpora(n_y=24, n_label=16)  # proportional: 3 + 2 = 5 steps per epoch
    assert_resumes_bitwise(MODEL, TASKS, TaskMixture({"y": a, "label": b}), tmp_path,
                           weighting=uncertainty(("regression", "classification"), learning_rate=1e-2))


def test_the_multi_input_config_deals_the_train_split_into_corpora_and_trains_on_them(tmp_path, data_dir):
    from mtl_jax import experiment
    from mtl_jax.config import load_config

    config = load_config("experiments/configs/reviews_multi_input.py", [
        "data.train_size=352", "data.validation_size=64", "data.test_size=64", "epochs=1", "batch_size=32",
        "plots=False"])
    built = experiment.build(config, data_dir)
    assert built.train.sizes() == [317, 35]  # 90 % sentiment, 10 % topic (tasks in name order)
    # 10 + 2 batches; p ~ n^(1/2): sqrt(317) / (sqrt(317) + sqrt(35)) = 0.7505 of 12 steps: 9.006
    assert built.train.counts(32).tolist() == [9, 3]
    # train_and_evaluate trains on built.train (tests/test_text_corpora.py runs it on a mixture end to end)
    state, _ = mtl.fit(built.model, built.tasks, built.train, epochs=1, batch_size=32, optimizer=built.optimizer,
                       weighting=built.weighting, input_key="tokens", progress=False)
    metrics = mtl.evaluate(built.model, built.tasks, state.params, built.data["test"], 64, "tokens")
    assert np.isfinite(metrics["sentiment/auc"]) and np.isfinite(metrics["topic/accuracy"])
    for mistake, message in ((["task_sampling=random"], "unknown task_sampling 'random'"),
                             (["task_shares.topc=1.0"], r"task_shares: unknown task\(s\) \['topc'\]"),
                             (["task_sampling=none"], "set task_sampling too")):
        with pytest.raises((ValueError, KeyError), match=message):
            experiment.check(load_config("experiments/configs/reviews_multi_input.py", mistake))


def test_a_tasks_mean_weight_is_over_the_steps_it_was_present_in():
    a, b = _corpora(n_y=24, n_label=16)
    _, history = mtl.fit(MODEL, TASKS, TaskMixture({"y": a, "label": b}, "round_robin"), epochs=1, batch_size=8,
                         input_key="x", progress=False, weighting=make_weighting("equal", TASKS, {}, steps_per_epoch=5))
    assert history["train/y/weight"] == [1.0] and history["train/label/weight"] == [1.0]  # not 3/5 and 2/5


@pytest.mark.parametrize("sampling", ["all", "proportional"])
def test_each_process_reads_only_its_rows_of_each_datasets_batch(sampling):
    """Per-process input: process i of n reads rows [i*B/n, (i+1)*B/n) of each dataset's batch
    and no other record; the n parts of a step, in process order, are its batch with the rows
    permuted (with one dataset per step, exactly the batch)."""
    from test_sources import CountingSource

    from mtl_jax.data.sources import RecordSource

    a, b = _corpora(n_y=40, n_label=20)
    whole = TaskMixture({"y": a, "label": b}, sampling=sampling)
    for epoch, start in ((0, 0), (1, 2)):
        steps = list(batches(whole, 8, seed=3, epoch=epoch, start_step=start))
        parts, reads = [], []
        for index in range(2):
            sources = [CountingSource(a), CountingSource(b)]
            mixture = TaskMixture({"y": RecordSource(sources[0], threads=0), "label": RecordSource(sources[1], threads=0)},
                                  sampling=sampling)
            before = sum(s.reads for s in sources)
            parts.append(list(batches(mixture, 8, seed=3, epoch=epoch, start_step=start, shard=(index, 2))))
            reads.append(sum(s.reads for s in sources) - before)
        assert reads[0] == reads[1] == sum(len(step["_valid"]) for step in steps) // 2  # half of every step each
        for step, batch in enumerate(steps):
            joined = {k: np.concatenate([p[step][k] for p in parts]) for k in batch}
            if sampling == "all":  # [y rows 0-3, label rows 0-3, y rows 4-7, label rows 4-7]
                order = np.concatenate([np.arange(0, 4), np.arange(8, 12), np.arange(4, 8), np.arange(12, 16)])
                batch = {k: v[order] for k, v in batch.items()}
            for key in batch:
                np.testing.assert_array_equal(joined[key], batch[key], err_msg=key)
    with pytest.raises(ValueError, match="does not split into 3 equal shards"):
        next(batches(whole, 8, seed=3, shard=(0, 3)))
