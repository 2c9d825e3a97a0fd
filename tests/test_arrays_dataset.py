"""dataset = "arrays": a user's .npz files (or folders of .npy) trained, evaluated and predicted from
a config, with every file, key, kind and label checked and named."""
import numpy as np
import pytest

from mtl_jax import experiment
from mtl_jax.config import load_config
from mtl_jax.data.arrays import load_arrays

CONFIG = "experiments/configs/arrays.py"


def _write(folder, n=64, seed=0, **extra):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8)).astype(np.float32)
    arrays = {"x": x, "quality": x[:, 0] - x[:, 1], "grade": (x[:, 2] > 0).astype(np.int32) + (x[:, 3] > 1),
              **extra}
    folder.mkdir(parents=True, exist_ok=True)
    return arrays


def _splits(tmp_path, **extra):
    paths = {}
    for seed, split in enumerate(("train", "validation", "test")):
        arrays = _write(tmp_path, seed=seed, **extra)
        np.savez(tmp_path / f"{split}.npz", **arrays)
        paths[split] = str(tmp_path / f"{split}.npz")
    return paths


def _config(paths, *overrides):
    data = [f"data.{split}={path}" for split, path in paths.items()]
    return load_config(CONFIG, [*data, "epochs=2", "batch_size=16", "plots=False", *overrides])


def test_arrays_train_evaluate_and_predict_from_a_config(tmp_path):
    paths = _splits(tmp_path / "data")
    results = experiment.train_and_evaluate(_config(paths), tmp_path / "run", progress=False)
    assert results["epochs_run"] == 2 and set(results["final"]) >= {"quality/rmse", "grade/accuracy"}
    assert experiment.evaluate_run(tmp_path / "run", "validation")["grade/loss"] > 0
    written = experiment.predict_run(tmp_path / "run", tmp_path / "p.csv", split="test")
    header = written.read_text().splitlines()[0].split(",")
    assert {"grade_label", "grade_true", "quality", "quality_true"} <= set(header)


def test_a_folder_of_npy_files_is_the_same_split_as_an_npz(tmp_path):
    arrays = _write(tmp_path)
    np.savez(tmp_path / "train.npz", **arrays)
    (tmp_path / "train").mkdir()
    for key, value in arrays.items():
        np.save(tmp_path / "train" / f"{key}.npy", value)
    from_npz = load_arrays(str(tmp_path / "train.npz"))["train"]
    from_folder = load_arrays(str(tmp_path / "train"))["train"]
    assert sorted(from_npz) == sorted(from_folder)
    for key in from_npz:
        np.testing.assert_array_equal(from_npz[key], from_folder[key])


def test_validation_and_test_may_be_left_out(tmp_path):
    paths = _splits(tmp_path / "data")
    config = _config({"train": paths["train"]}, "data.validation=", "data.test=", "best_metric=")
    results = experiment.train_and_evaluate(config, tmp_path / "run", progress=False)
    assert results["epochs_run"] == 2 and "final" not in results


def test_a_target_under_another_key_and_an_input_key(tmp_path):
    paths = {}
    for split in ("train", "validation"):
        arrays = _write(tmp_path)
        np.savez(tmp_path / f"{split}.npz", features=arrays["x"], y_quality=arrays["quality"], grade=arrays["grade"])
        paths[split] = str(tmp_path / f"{split}.npz")
    config = _config(paths, "data.input_key=features", "data.test=", "best_metric=")
    config.tasks.quality.target = "y_quality"
    results = experiment.train_and_evaluate(config, tmp_path / "run", progress=False)
    assert results["epochs_run"] == 2


@pytest.mark.parametrize("change, error, message", [
    (lambda p, c: c.data.update(train=str(p / "missing.npz")), FileNotFoundError, "data.train: .*missing.npz' does not exist"),
    (lambda p, c: c.data.update(input_key="X"), KeyError, "no input array 'X'; did you mean 'x'"),
    (lambda p, c: c.tasks.grade.update(kind="clasification"), ValueError, "unknown kind 'clasification'; did you mean 'classification'"),
    (lambda p, c: c.tasks.__setitem__("grade", {"num_classes": 3}), ValueError, "task 'grade' needs a 'kind'"),
    (lambda p, c: c.tasks.__setitem__("grade", {"kind": "classification"}), ValueError, "task 'grade' \\(classification\\): bad options"),
    (lambda p, c: c.tasks.grade.update(num_classes=2), ValueError, "grade.*label"),
    (lambda p, c: c.tasks.update(price={"kind": "regression"}), KeyError, "task 'price' needs target key 'price'"),
])
def test_user_mistakes_are_named(tmp_path, change, error, message):
    paths = _splits(tmp_path / "data")
    config = _config(paths)
    with config.unlocked():
        change(tmp_path, config)
    with pytest.raises(error, match=message):
        experiment.train_and_evaluate(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()  # a refused run leaves no workdir behind


def test_ragged_or_single_arrays_are_refused(tmp_path):
    np.savez(tmp_path / "ragged.npz", x=np.zeros((10, 8)), quality=np.zeros(9))
    with pytest.raises(ValueError, match="one row per example"):
        load_arrays(str(tmp_path / "ragged.npz"))
    np.save(tmp_path / "single.npy", np.zeros((10, 8)))
    with pytest.raises(ValueError, match="not a .npz of named arrays"):
        load_arrays(str(tmp_path / "single.npy"))


def test_a_per_pixel_task_gets_the_inputs_height_and_width(tmp_path):
    rng = np.random.default_rng(0)
    for split in ("train", "validation"):
        image = rng.uniform(size=(32, 16, 16, 3)).astype(np.float32)
        np.savez(tmp_path / f"{split}.npz", image=image, mask=(image[..., 0] > 0.5).astype(np.int32),
                 bright=(image.mean(axis=(1, 2, 3)) > 0.5).astype(np.int32))
    config = load_config(CONFIG, [f"data.train={tmp_path / 'train.npz'}", f"data.validation={tmp_path / 'validation.npz'}",
                                  "data.test=", "data.input_key=image", "model=seed_cnn", "epochs=1",
                                  "batch_size=16", "best_metric=", "model_kwargs={}"])
    config.tasks = {"mask": {"kind": "segmentation", "num_classes": 2}, "bright": {"kind": "binary"}}
    experiment.train_and_evaluate(config, tmp_path / "run", progress=False)
    metrics = experiment.evaluate_run(tmp_path / "run", "validation")
    assert 0 <= metrics["mask/pixel_accuracy"] <= 1 and "bright/auc" in metrics
