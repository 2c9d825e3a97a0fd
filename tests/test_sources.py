"""Record sources: datasets read batch by batch from a random-access source (a TFDS data source,
a grain source, any ``__len__`` + ``__getitem__``) give the same batches, runs and metrics as the
same data in memory, never read the whole split up front, and are checked batch by batch."""
import chex
import jax
import numpy as np
import optax
import pytest

import mtl_jax as mtl
from mtl_jax.data import batches, load_houses
from mtl_jax.data.sources import RecordSource, order_by_key
from mtl_jax.models import MLP, hard_sharing

from conftest import assert_resumes_bitwise, toy_regression_classification

TASKS = (mtl.regression("y"), mtl.classification("label", 3, weight=0.5))
MODEL = hard_sharing(MLP((16,)), TASKS)


class CountingSource:
    """A random-access source of example dicts that counts the records it hands out."""

    def __init__(self, arrays, order=None):
        self.arrays = arrays
        self.order = np.arange(len(next(iter(arrays.values())))) if order is None else order
        self.reads = 0

    def __len__(self):
        return len(self.order)

    def __getitem__(self, i):
        self.reads += 1
        return {k: v[self.order[i]] for k, v in self.arrays.items()}


@pytest.mark.parametrize("threads", [0, 3])
def test_a_record_source_gives_the_in_memory_batches(threads):
    data = toy_regression_classification(37, seed=4)
    source = RecordSource(CountingSource(data), threads=threads, prefetch=2)
    for epoch in (0, 1):
        for start in (0, 2):
            expected = list(batches(data, 8, seed=3, epoch=epoch, start_step=start))
            got = list(batches(source, 8, seed=3, epoch=epoch, start_step=start))
            assert len(got) == len(expected) == 5 - start
            chex.assert_trees_all_equal(got, expected)  # padding and the _valid mask included


def test_a_source_is_read_batch_by_batch_not_whole():
    data = toy_regression_classification(400, seed=5)
    counting = CountingSource(data)
    source = RecordSource(counting, threads=0)
    first = next(batches(source, 16, seed=0))
    assert counting.reads == 1 + 16  # the keys from one record, then one batch
    assert first["x"].shape == (16, 8)


def test_an_index_map_reads_a_shuffled_source_in_key_order():
    data = {**toy_regression_classification(20, seed=6), "id": np.arange(20)}
    shuffled = np.random.default_rng(0).permutation(20)
    source = RecordSource(CountingSource(data, order=shuffled), order=order_by_key(CountingSource(data, shuffled)))
    chex.assert_trees_all_equal(source.read(np.arange(20)), data)


def test_fit_and_evaluate_on_a_source_equal_the_in_memory_run():
    train, validation = toy_regression_classification(40, seed=1), toy_regression_classification(24, seed=2)
    options = {"epochs": 2, "batch_size": 8, "input_key": "x", "progress": False, "optimizer": optax.adam(1e-2)}
    state, history = mtl.fit(MODEL, TASKS, train, validation=validation, **options)
    streamed_state, streamed_history = mtl.fit(MODEL, TASKS, RecordSource(CountingSource(train), threads=2),
                                               validation=RecordSource(CountingSource(validation)), **options)
    chex.assert_trees_all_equal(jax.device_get(streamed_state.params), jax.device_get(state.params))
    assert streamed_history == history
    assert mtl.evaluate(MODEL, TASKS, state.params, RecordSource(CountingSource(validation)), input_key="x") == \
        mtl.evaluate(MODEL, TASKS, state.params, validation, input_key="x")
    predictions = mtl.predict(MODEL, TASKS, state.params, RecordSource(CountingSource(validation)), input_key="x")
    chex.assert_trees_all_equal(predictions, mtl.predict(MODEL, TASKS, state.params, validation["x"]))


def test_a_bad_label_in_a_later_batch_of_a_source_is_named_when_its_batch_is_read():
    train = toy_regression_classification(200, seed=1)
    train["label"][150] = 7  # past the up-front check of the first examples
    source = RecordSource(CountingSource(train), threads=0)
    with pytest.raises(ValueError, match="label"):
        mtl.fit(MODEL, TASKS, source, epochs=1, batch_size=8, input_key="x", progress=False)


def test_the_houses_builder_streams_the_same_splits_it_loads(data_dir, tiny_houses):
    sources = load_houses(train_size=96, validation_size=40, test_size=40, seed=0, data_dir=data_dir,
                          in_memory=False)
    for split, arrays in tiny_houses.items():
        source = sources[split]
        assert len(source) == len(arrays["price"])
        streamed = source.read(np.arange(len(source)))
        assert set(streamed) == set(arrays)
        for key, value in arrays.items():
            assert streamed[key].dtype == value.dtype, key
            np.testing.assert_array_equal(streamed[key], value)


def test_a_source_without_the_random_access_protocol_is_refused_clearly():
    with pytest.raises(TypeError, match="__len__ and __getitem__"):
        RecordSource(iter([{"x": 1}]))
    with pytest.raises(TypeError, match="dict of arrays, a RecordSource, or an iterable of batch dicts"):
        mtl.fit(MODEL, TASKS, 42, epochs=1, input_key="x", progress=False)
    with pytest.raises(KeyError, match="task 'y' needs target key 'y'"):  # a list of batches, without targets
        mtl.fit(MODEL, TASKS, [{"x": np.zeros(8)}], epochs=1, input_key="x", progress=False)


def test_a_run_on_a_source_resumed_mid_epoch_equals_the_uninterrupted_one(tmp_path):
    """The data position of a streamed run is (epoch, step_in_epoch), as for arrays: resuming from a
    mid-epoch checkpoint reads the remaining batches of that epoch and ends bitwise equal."""
    source = RecordSource(CountingSource(toy_regression_classification(40, seed=1)), threads=2)
    assert_resumes_bitwise(MODEL, TASKS, source, tmp_path)


@pytest.mark.parametrize("count", [2, 4])
def test_the_shards_of_a_batch_read_it_once_and_together_are_the_batch(count):
    """Per-process input: process i of `count` reads rows [i*B/count, (i+1)*B/count) of every
    global batch, padding and mask included, and only those records."""
    data = toy_regression_classification(37, seed=8)
    for epoch, start in ((0, 0), (1, 2)):
        whole = list(batches(data, 8, seed=3, epoch=epoch, start_step=start))
        for source_kind in ("arrays", "source"):
            parts = []
            for index in range(count):
                counting = CountingSource(data)
                dataset = data if source_kind == "arrays" else RecordSource(counting, threads=0)
                reads_before = counting.reads
                parts.append(list(batches(dataset, 8, seed=3, epoch=epoch, start_step=start, shard=(index, count))))
                if source_kind == "source":
                    assert counting.reads - reads_before == len(whole) * 8 // count
            for step, batch in enumerate(whole):
                joined = {k: np.concatenate([p[step][k] for p in parts]) for k in batch}
                chex.assert_trees_all_equal(joined, batch)


def test_a_shard_must_split_the_batch_evenly():
    data = toy_regression_classification(16, seed=8)
    with pytest.raises(ValueError, match="batch_size 6 does not split into 4 equal shards"):
        next(batches(data, 6, shard=(0, 4)))
    with pytest.raises(ValueError, match="0 <= index < count"):
        next(batches(data, 8, shard=(2, 2)))
