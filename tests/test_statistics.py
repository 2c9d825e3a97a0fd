"""Normalisation statistics (mtl_jax/data/statistics.py): exact on hard inputs, stored once."""
import json

import numpy as np
import pytest

from mtl_jax.data.statistics import cached_statistics, compute_statistics, normalise


def _reader(arrays):
    return lambda indices: {key: value[indices] for key, value in arrays.items()}


def test_batched_moments_equal_numpy_on_a_large_mean_with_a_tiny_spread():
    rng = np.random.default_rng(0)
    values = 1e8 + rng.normal(scale=1e-3, size=1000)  # E[x^2] - E[x]^2 cancels every digit here
    stats = compute_statistics(_reader({"y": values}), 1000, ["y"], batch_size=7)["y"]
    np.testing.assert_allclose(stats["mean"], values.mean(), rtol=1e-15)
    np.testing.assert_allclose(stats["std"], values.std(), rtol=1e-4)  # float64 holds 1e8 to ~1.5e-8
    naive = np.sqrt(max(np.mean(values ** 2) - values.mean() ** 2, 0.0))
    assert abs(naive - values.std()) > 0.1 * values.std()  # the case is hard: the one-pass formula fails
    assert stats["count"] == 1000


def test_images_get_one_mean_and_std_per_channel():
    rng = np.random.default_rng(1)
    images = rng.normal(loc=[0.0, 5.0, -3.0], scale=[1.0, 0.1, 10.0], size=(50, 6, 5, 3))
    stats = compute_statistics(_reader({"image": images}), 50, ["image"], batch_size=16)["image"]
    np.testing.assert_allclose(stats["mean"], images.mean(axis=(0, 1, 2)), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(stats["std"], images.std(axis=(0, 1, 2)), rtol=1e-12)
    standardised = normalise(images, stats)
    np.testing.assert_allclose(standardised.mean(axis=(0, 1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(standardised.std(axis=(0, 1, 2)), 1.0, atol=1e-5)


def test_a_constant_feature_is_divided_by_one_not_zero():
    stats = compute_statistics(_reader({"y": np.full(20, 3.5)}), 20, ["y"])["y"]
    assert stats["std"] == 1.0
    np.testing.assert_array_equal(normalise(np.full(4, 3.5), stats), np.zeros(4, np.float32))


def test_missing_values_are_left_out_and_infinite_ones_named():
    values = np.arange(10.0)
    values[3] = np.nan  # a missing label
    stats = compute_statistics(_reader({"y": values}), 10, ["y"])["y"]
    kept = np.delete(np.arange(10.0), 3)
    np.testing.assert_allclose([stats["mean"], stats["std"]], [kept.mean(), kept.std()])
    assert stats["count"] == 9
    values[5] = np.inf
    with pytest.raises(ValueError, match="'y'.*infinite"):
        compute_statistics(_reader({"y": values}), 10, ["y"])


def test_a_depth_map_has_one_mean_and_std_over_its_valid_pixels():
    maps = np.random.default_rng(0).normal(3.0, 2.0, size=(6, 4, 5))
    maps[0, :2] = np.nan
    stats = compute_statistics(_reader({"depth": maps}), 6, ["depth"])["depth"]
    valid = maps[~np.isnan(maps)]
    np.testing.assert_allclose([stats["mean"], stats["std"]], [valid.mean(), valid.std()])


def test_a_large_split_is_estimated_on_the_same_fixed_subset():
    values = np.random.default_rng(2).normal(size=5000)
    first = compute_statistics(_reader({"y": values}), 5000, ["y"], max_examples=300)
    again = compute_statistics(_reader({"y": values}), 5000, ["y"], max_examples=300)
    assert first == again and first["y"]["count"] == 300
    assert abs(first["y"]["mean"] - values.mean()) < 0.2


def test_stored_statistics_are_read_back_and_a_new_request_computes_its_own(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"y": {"mean": 1.0, "std": 2.0, "count": 3}}

    request = {"dataset": "d", "split": "train", "image_size": (32, 32)}
    assert cached_statistics(tmp_path, request, compute) == compute()
    calls.clear()
    assert cached_statistics(tmp_path, request, compute)["y"]["std"] == 2.0 and not calls
    cached_statistics(tmp_path, {**request, "image_size": (64, 64)}, compute)
    assert calls == [1]
    files = sorted(tmp_path.iterdir())
    assert len(files) == 2 and not [f for f in files if f.suffix == ".tmp"]
    assert json.loads(files[0].read_text())["request"]["split"] == "train"
