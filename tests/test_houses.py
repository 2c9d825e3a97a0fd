from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

from mtl_jax.data import batches, houses, load_houses
from mtl_jax.data.houses_builder import Houses


def test_splits_have_requested_sizes_dtypes_and_label_ranges(tiny_houses):
    assert {k: len(v["price"]) for k, v in tiny_houses.items()} == {"train": 96, "validation": 40, "test": 40}
    train = tiny_houses["train"]
    assert train["image"].shape == (96, 64, 64, 3) and train["image"].dtype == np.uint8
    assert train["parts"].shape == (96, 64, 64)
    for key, classes in (("kind", 3), ("storeys", 3), ("roof_colour", 4), ("parts", 4)):
        assert train[key].min() >= 0 and train[key].max() < classes
    np.testing.assert_array_equal(train["id"], np.arange(96))
    assert len(np.unique(train["kind"])) == 3


def test_generation_is_deterministic_and_splits_differ(tiny_houses, tmp_path):
    again = load_houses(train_size=96, validation_size=40, test_size=40, seed=0, data_dir=tmp_path)
    for split in tiny_houses:
        for key in tiny_houses[split]:
            np.testing.assert_array_equal(again[split][key], tiny_houses[split][key])
    assert not np.array_equal(tiny_houses["validation"]["image"], tiny_houses["test"]["image"])
    # example i does not depend on how many examples are generated
    first = dict(houses.generate(3, seed=0, split="train"))
    np.testing.assert_array_equal(first[2]["image"], tiny_houses["train"]["image"][2])
    other_seed = load_houses(train_size=8, validation_size=2, test_size=2, seed=1, data_dir=tmp_path)
    assert not np.array_equal(other_seed["train"]["image"][:8], tiny_houses["train"]["image"][:8])


def test_labels_follow_the_generative_rules(tiny_houses):
    train = tiny_houses["train"]
    parts = train["parts"]
    # every house has a wall, a roof and at least one window; windows = storeys * per-storey count
    assert ((parts == 1).reshape(96, -1).any(1) & (parts == 2).reshape(96, -1).any(1)).all()
    window_pixels = (parts == 3).reshape(96, -1).sum(1)
    np.testing.assert_array_equal(window_pixels, 16 * train["windows"])
    assert np.all(train["windows"] % (train["storeys"] + 1) == 0)
    residual = train["price"] - (1 + 0.5 * train["storeys"] + 0.1 * train["windows"]
                                 + np.array([0, 0.6, 1.2])[train["kind"]])
    assert residual.min() > -0.5 and residual.max() < 2.5  # 2 * size in [0, 2] plus small noise


def test_prepared_data_are_reused_from_the_cache(tiny_houses, data_dir):
    prepared = list(data_dir.glob(f"houses/n96-40-40-seed0/{Houses.VERSION}"))
    assert len(prepared) == 1
    stamp = {p: p.stat().st_mtime for p in prepared[0].iterdir()}
    load_houses(train_size=96, validation_size=40, test_size=40, seed=0, data_dir=data_dir)
    assert {p: p.stat().st_mtime for p in prepared[0].iterdir()} == stamp


def test_a_dataset_another_process_is_generating_is_waited_for_and_not_generated_again(tmp_path):
    """Independent processes sharing a data folder (e.g. several `mtl-jax compare` workers) take
    turns through the dataset's lock file: a load waits while the lock is held elsewhere, then
    finds the data prepared (simulated: the lock held here through another file description)."""
    import fcntl
    import threading

    from mtl_jax.data.houses_builder import houses_config

    builder = Houses(config=houses_config(16, 8, 8, 0), data_dir=str(tmp_path), file_format="array_record")
    lock = open(tmp_path / f".{builder.info.full_name.replace('/', '_')}.lock", "a")
    fcntl.flock(lock, fcntl.LOCK_EX)
    loaded = {}
    worker = threading.Thread(target=lambda: loaded.update(load_houses(16, 8, 8, 0, data_dir=tmp_path)), daemon=True)
    worker.start()
    worker.join(timeout=1.0)
    assert worker.is_alive() and not builder.is_prepared()  # waiting, nothing written
    builder.download_and_prepare()  # "the other process" generates meanwhile...
    stamp = {p: p.stat().st_mtime_ns for p in Path(builder.data_dir).iterdir()}
    lock.close()  # ...and lets go
    worker.join(timeout=60)
    assert not worker.is_alive() and len(loaded["train"]["price"]) == 16
    assert {p: p.stat().st_mtime_ns for p in Path(builder.data_dir).iterdir()} == stamp  # not generated again


def test_invalid_sizes_are_refused(tmp_path):
    with pytest.raises(ValueError, match="validation split needs at least 1"):
        load_houses(train_size=4, validation_size=0, test_size=2, data_dir=tmp_path)


def test_epoch_batches_are_seeded_permutations_with_padding():
    arrays = {"a": np.arange(10)}
    epoch0 = list(batches(arrays, 4, seed=3, epoch=0))
    assert [b["_valid"].tolist() for b in epoch0][-1] == [1, 1, 0, 0]
    seen = np.concatenate([b["a"][b["_valid"] > 0] for b in epoch0])
    assert sorted(seen) == list(range(10))
    again = np.concatenate([b["a"] for b in batches(arrays, 4, seed=3, epoch=0)])
    other = np.concatenate([b["a"] for b in batches(arrays, 4, seed=3, epoch=1)])
    np.testing.assert_array_equal(again, np.concatenate([b["a"] for b in epoch0]))
    assert not np.array_equal(again, other)


def test_public_datasets_read_through_the_same_path_offline():
    from mtl_jax.data import read_split

    with tfds.testing.mock_data(num_examples=12):
        source = tfds.data_source("mnist", split="train")
        arrays = read_split(source, batch_size=5)
    assert arrays["image"].shape == (12, 28, 28, 1) and arrays["label"].shape == (12,)
