"""multi_digits: MultiMNIST-style pairs of scikit-learn's real handwritten digits, offline."""
import numpy as np
import pytest

pytest.importorskip("sklearn", reason="multi_digits needs the optional scikit-learn (installed by .[test])")

from mtl_jax.data import digits  # noqa: E402
from mtl_jax.data.digits_builder import load_multi_digits  # noqa: E402


def test_the_split_pools_are_disjoint_and_use_every_digit():
    images, labels = digits.handwritten_digits()
    assert images.shape == (1797, 8, 8) and set(np.unique(labels)) == set(range(10))
    pools = digits.pool_indices(len(labels))
    together = np.concatenate(list(pools.values()))
    assert len(together) == len(labels) and len(np.unique(together)) == len(labels)
    assert [len(pools[s]) for s in ("train", "validation", "test")] == [1078, 359, 360]
    for split, (pool_images, pool_labels) in digits.digit_pools().items():
        np.testing.assert_array_equal(pool_labels, labels[pools[split]])
        assert pool_images.shape == (len(pools[split]), 16, 16)
        assert 0.0 <= pool_images.min() and pool_images.max() <= 255.0


def test_enlarging_keeps_a_constant_image_and_the_mean_of_any_image():
    flat = np.full((1, 8, 8), 7.0, np.float32)
    np.testing.assert_allclose(digits._enlarge(flat), 7.0)
    images = digits.handwritten_digits()[0][:20]
    big = digits._enlarge(images)
    assert big.shape == (20, 16, 16)
    np.testing.assert_allclose(big.mean(axis=(1, 2)), images.mean(axis=(1, 2)), rtol=0.08)


def test_the_left_digit_sits_top_left_the_right_bottom_right_and_overlaps_take_the_maximum():
    rng = np.random.default_rng(0)
    left, right = rng.uniform(0, 255, (16, 16)), rng.uniform(0, 255, (16, 16))
    for shifts in ([0, 0, 0, 0], [4, 4, 4, 4], [1, 3, 2, 0]):
        r, c, r2, c2 = shifts
        canvas = digits.compose(left, right, np.array(shifts)).astype(np.float64)
        bottom, edge = 8 - r2, 8 - c2
        expected = np.zeros((24, 24))
        expected[r:r + 16, c:c + 16] = left
        expected[bottom:bottom + 16, edge:edge + 16] = np.maximum(expected[bottom:bottom + 16, edge:edge + 16], right)
        np.testing.assert_allclose(canvas, np.rint(expected), atol=0)
    only_left = digits.compose(left, np.zeros((16, 16)), np.array([2, 1, 0, 0]))
    np.testing.assert_array_equal(only_left[2:18, 1:17], np.rint(left).astype(np.uint8))
    assert only_left[:2].sum() == 0 and only_left[:, :1].sum() == 0


def test_examples_are_their_pools_digits_and_depend_only_on_seed_split_and_index():
    pools = digits.digit_pools()
    few = dict(digits.generate(5, seed=3, split="validation"))
    many = dict(digits.generate(40, seed=3, split="validation"))
    for i in few:
        np.testing.assert_array_equal(few[i]["image"], many[i]["image"])
        rng = np.random.default_rng([3, digits.SPLITS["validation"], i])
        a, b = rng.choice(len(pools["validation"][1]), size=2, replace=False)
        assert (few[i]["left"], few[i]["right"]) == (pools["validation"][1][a], pools["validation"][1][b])
        assert few[i]["image"].shape == (24, 24, 1) and few[i]["image"].dtype == np.uint8
    other_seed = dict(digits.generate(5, seed=4, split="validation"))
    assert any(not np.array_equal(few[i]["image"], other_seed[i]["image"]) for i in few)
    labels = np.array([[e["left"], e["right"]] for e in many.values()])
    assert len(np.unique(labels[:, 0])) >= 8 and len(np.unique(labels[:, 1])) >= 8


def test_loaded_in_memory_and_streamed_alike(data_dir):
    from mtl_jax.data import batches

    arrays = load_multi_digits(train_size=64, validation_size=16, test_size=16, data_dir=data_dir)
    streamed = load_multi_digits(train_size=64, validation_size=16, test_size=16, data_dir=data_dir, in_memory=False)
    train = arrays["train"]
    assert train["image"].shape == (64, 24, 24, 1) and train["image"].dtype == np.uint8
    assert train["left"].dtype == np.int32 and train["right"].dtype == np.int32
    np.testing.assert_array_equal(train["id"], np.arange(64))
    expected = dict(digits.generate(3, seed=0, split="train"))
    for i in range(3):
        np.testing.assert_array_equal(train["image"][i], expected[i]["image"])
        assert (train["left"][i], train["right"][i]) == (expected[i]["left"], expected[i]["right"])
    for from_arrays, from_source in zip(batches(train, 16, seed=1, epoch=2),
                                        batches(streamed["train"], 16, seed=1, epoch=2)):
        for key in ("image", "left", "right"):
            np.testing.assert_array_equal(from_arrays[key], from_source[key])


@pytest.mark.long
def test_the_config_trains_both_digits_well_above_chance(tmp_path, data_dir):
    from mtl_jax import experiment
    from mtl_jax.config import load_config

    config = load_config("experiments/configs/multi_digits.py", [
        "data.train_size=1500", "data.validation_size=200", "data.test_size=200", "epochs=4", "plots=False"])
    results = experiment.train_and_evaluate(config, tmp_path, progress=False, data_dir=data_dir)
    final = results["final"]
    assert final["left/accuracy"] > 0.3 and final["right/accuracy"] > 0.3, final  # chance: 0.1
