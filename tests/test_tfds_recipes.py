"""Public TFDS datasets as multi-task problems (mtl_jax/data/tfds_tasks.py, tfds_recipes.py,
multi_mnist.py), run on ``tfds.testing.mock_data``: random examples shaped like the real
dataset's, nothing downloads."""
import numpy as np

import mtl_jax as mtl
import pytest

from conftest import mock_tfds
from mtl_jax.config import load_config
from mtl_jax.data import statistics, tfds_tasks
from mtl_jax.data.catalog import DATASETS
from mtl_jax.data.digits import compose
from mtl_jax.data.sources import head
from mtl_jax.experiment import build, check, train_and_evaluate

RECIPES = ("dsprites", "shapes3d", "celeb_a", "retinopathy", "multi_mnist")
IMAGE_SHAPES = {"dsprites": (64, 64, 1), "shapes3d": (64, 64, 3), "celeb_a": (64, 64, 3),
                "retinopathy": (128, 128, 3), "multi_mnist": (36, 36, 1)}


@pytest.mark.parametrize("name", RECIPES)
def test_a_recipe_streams_every_task_with_its_kinds_dtype_and_range(name, tmp_path):
    spec = DATASETS.get(name)
    tasks = spec.make_tasks({task: {} for task in spec.tasks})
    with mock_tfds(24):
        data = spec.load(data_dir=tmp_path)
        assert set(data) == {"train", "validation", "test"}
        train = head(data["train"], len(data["train"]))
    assert train[spec.input_key].shape == (24, *IMAGE_SHAPES[name])
    for task in tasks:
        target = train[task.name]
        assert len(target) == 24, task.name
        if task.kind == "classification":
            assert target.dtype == np.int32 and 0 <= target.min() and target.max() < task.output_dim, task.name
        elif task.kind == "binary":
            assert set(np.unique(target)) <= {0.0, 1.0}, task.name
        else:
            assert target.dtype == np.float32 and np.isfinite(target).all(), task.name
    if name == "celeb_a":
        assert len(tasks) == 40


@pytest.mark.parametrize("name", ["dsprites", "retinopathy"])
def test_inputs_and_regression_targets_are_standardised_on_the_train_split(name, tmp_path):
    spec = DATASETS.get(name)
    with mock_tfds(32):
        train = head(spec.load(data_dir=tmp_path)["train"], 32)
    image = train["image"].astype(np.float64)
    np.testing.assert_allclose(image.mean(axis=(0, 1, 2)), 0.0, atol=1e-4)
    np.testing.assert_allclose(image.std(axis=(0, 1, 2)), 1.0, atol=1e-4)
    regressions = [task for task, f in spec.feature_tasks.items() if f.kind == "regression"]
    for task in regressions:
        np.testing.assert_allclose([train[task].mean(), train[task].std()], [0.0, 1.0], atol=1e-4)
    if name == "retinopathy":  # mock images have random sizes: resized to the recipe's
        np.testing.assert_array_equal(train["detection"], (train["grade"] > 0).astype(np.float32))


def test_statistics_are_computed_once_and_stored_with_the_prepared_data(tmp_path, monkeypatch):
    spec = DATASETS.get("shapes3d")
    with mock_tfds(16):
        first = head(spec.load(data_dir=tmp_path)["train"], 16)
    stored = list((tmp_path / "mtl_jax_statistics" / "shapes3d").rglob("statistics-*.json"))
    assert len(stored) == 1

    def refuse(*args, **kwargs):
        raise AssertionError("statistics computed again")

    monkeypatch.setattr(statistics, "compute_statistics", refuse)
    monkeypatch.setattr(tfds_tasks, "compute_statistics", refuse, raising=False)
    with mock_tfds(16):
        again = head(spec.load(data_dir=tmp_path)["train"], 16)
        np.testing.assert_array_equal(again["image"], first["image"])
        with pytest.raises(AssertionError, match="computed again"):  # other preprocessing: other statistics
            spec.load(data_dir=tmp_path, image_size=(32, 32))


def test_multi_mnist_pairs_two_digits_of_the_same_split_deterministically(tmp_path):
    import tensorflow_datasets as tfds

    with mock_tfds(40):
        data = DATASETS.get("multi_mnist").load(data_dir=tmp_path)
        digits = tfds.data_source("mnist", split="train[:50000]", data_dir=str(tmp_path))
        pairs = data["train"].source
        first, again = head(data["train"], 40), head(data["train"], 40)
        for i in (0, 7, 39):
            j, shifts = pairs._partner_and_shifts(i)
            assert j != i and 0 <= j < 40
            assert first["left"][i] == digits[i]["label"] and first["right"][i] == digits[j]["label"]
            expected = compose(digits[i]["image"][..., 0], digits[j]["image"][..., 0], shifts)
            np.testing.assert_array_equal(first["image"][i, ..., 0], expected)
    for key in first:
        np.testing.assert_array_equal(first[key], again[key])


def test_any_tfds_dataset_maps_features_to_tasks_from_a_config(tmp_path):
    config = load_config("experiments/configs/tfds_mnist.py", ["data.validation_split="])
    spec, tasks = check(config)
    assert tasks[0].kind == "classification" and tasks[0].output_dim == 10
    assert spec.class_names["digit"] == tuple(str(d) for d in range(10))
    with mock_tfds(12):
        data = spec.load(data_dir=tmp_path, **config.data)
    assert set(data) == {"train", "test"} and head(data["test"], 3)["digit"].dtype == np.int32


@pytest.mark.parametrize("tasks,data,message", [
    ({"digit": {"feature": "lable"}}, {"name": "mnist"}, "no feature 'lable'; did you mean 'label'"),
    ({"x": {"feature": "value_x_position", "kind": "classification"}}, {"name": "dsprites"}, "num_classes"),
    ({"digit": {"feature": "label"}}, {"name": "mnsit"}, "did you mean 'mnist'"),
    ({"digit": {"feature": "label"}}, {}, "needs data.name"),
    ({"big": {"feature": "label", "num_classes": 12}}, {"name": "mnist"}, "has 10 classes"),
])
def test_a_wrong_mapping_is_refused_before_anything_loads(tasks, data, message):
    config = load_config("experiments/configs/tfds_mnist.py")
    config.data, config.tasks = data, tasks
    with pytest.raises((KeyError, ValueError), match=message):
        check(config)


def test_an_integer_feature_without_a_kind_is_refused_with_what_to_give(tmp_path):
    features = tfds_tasks.tfds_features("diabetic_retinopathy_detection/btgraham-300")
    with pytest.raises(ValueError, match="give 'kind'"):
        tfds_tasks.resolve("name", tfds_tasks.FeatureTask("name"), features)


def test_a_recipe_config_trains_on_mock_data(tmp_path):
    config = load_config("experiments/configs/dsprites.py", ["epochs=1", "batch_size=16", "eval_batch_size=32",
                                                            "plots=False"])
    with mock_tfds(32):
        results = train_and_evaluate(config, tmp_path / "run", progress=False, data_dir=tmp_path / "data")
    assert np.isfinite(results["final"]["scale/rmse"]) and 0 <= results["final"]["shape/accuracy"] <= 1


def test_cityscapes_label_ids_map_to_the_19_evaluated_classes_and_disparity_to_inverse_depth():
    from mtl_jax.data.tfds_recipes import cityscapes_disparity, cityscapes_train_ids

    labels = np.asarray([[[7], [26]], [[0], [33]]], np.uint8)  # road, car, unlabeled, bicycle
    np.testing.assert_array_equal(cityscapes_train_ids(labels)[..., 0], [[0, 13], [-1, 18]])
    disparity = cityscapes_disparity(np.asarray([[[0], [1]], [[257], [513]]], np.uint16))
    assert disparity.shape == (2, 2) and np.isnan(disparity[0, 0])
    np.testing.assert_allclose(disparity.ravel()[1:], [0.0, 1.0, 2.0])


def test_a_map_with_missing_pixels_is_resized_over_its_valid_pixels_only():
    from mtl_jax.data.tfds_tasks import resize_map

    depth = np.full((8, 8), 2.0, np.float32)
    depth[:, :4] = np.nan  # the left half missing
    depth[0, 5] = np.nan   # and one pixel on the right
    small = resize_map(depth, (2, 2))
    assert np.isnan(small[:, 0]).all()  # mostly missing: missing
    np.testing.assert_allclose(small[:, 1], 2.0, rtol=1e-6)  # the valid pixels' value, not NaN and not diluted
    np.testing.assert_array_equal(resize_map(np.ones((4, 4), np.float32), (2, 2)), np.ones((2, 2)))


def test_the_dense_cityscapes_recipe_streams_both_maps_and_its_config_trains_on_mock_data(tmp_path):
    from mtl_jax.data.catalog import DATASETS

    config = load_config("experiments/configs/cityscapes.py", [
        "data.image_size=(16,32)", "epochs=1", "batch_size=2", "eval_batch_size=2",
        "architecture=hard", "model=seed_cnn", "architecture_kwargs={}", "plots=False"])  # MTAN: test_architectures
    with mock_tfds(4):
        splits = DATASETS.get("cityscapes").load(data_dir=tmp_path / "data", image_size=(16, 32), threads=0)
        example = splits["train"].read(np.arange(2))
        assert example["image_left"].shape == (2, 16, 32, 3) and example["segmentation"].shape == (2, 16, 32)
        assert example["disparity"].shape == (2, 16, 32) and example["segmentation"].dtype == np.int32
        assert set(np.unique(example["segmentation"])) <= set(range(-1, 19))
        built = build(config, tmp_path / "data")
        state, _ = mtl.fit(built.model, built.tasks, built.train, epochs=1, batch_size=2, optimizer=built.optimizer,
                           input_key="image_left", progress=False)
        metrics = mtl.evaluate(built.model, built.tasks, state.params, built.data["test"], 2, "image_left")
    assert 0 <= metrics["segmentation/miou"] <= 1 and np.isfinite(metrics["disparity/loss"])
