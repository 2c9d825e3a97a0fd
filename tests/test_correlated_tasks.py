"""``correlated_tasks``: T regression tasks with a set correlation structure, and gradients that conflict."""
import numpy as np
import pytest

from mtl_jax.config import load_config
from mtl_jax.data import correlated_tasks as ct
from mtl_jax.data.correlated_tasks_builder import load_correlated_tasks
from mtl_jax.experiment import build, check
from mtl_jax.train import fit


@pytest.mark.parametrize("tasks, rho", [(2, 0.0), (8, 0.5), (9, 0.9)])
def test_the_weight_vectors_have_exactly_the_chosen_cosines(tasks, rho):
    w = ct.world(tasks, rho, features=16, seed=3)["w"]
    gram = w @ w.T
    np.testing.assert_allclose(gram, ct.SCALE ** 2 * ct.correlation_matrix(tasks, rho), atol=1e-12)
    np.testing.assert_allclose(np.linalg.eigvalsh(ct.correlation_matrix(tasks, rho)).min() > 0, True)
    halves = np.arange(tasks) < tasks // 2
    assert np.all(gram[np.ix_(halves, ~halves)] <= 0) and np.all(gram[np.ix_(halves, halves)] >= 0)


def test_targets_correlate_within_groups_and_oppose_across():
    data = ct.examples(6000, num_tasks=8, rho=0.5, features=32, seed=0)
    y = np.stack([data[name] for name in ct.task_names(8)], axis=1)
    correlation = np.corrcoef(y.T)
    group = np.arange(8) < 4
    within = correlation[np.ix_(group, group)][~np.eye(4, dtype=bool)]
    across = correlation[np.ix_(group, ~group)]
    assert np.all(np.abs(within - 0.5) < 0.06) and np.all(np.abs(across + 0.5) < 0.06)
    assert data["x"].dtype == np.float32 and data["x"].shape == (6000, 32)


def test_examples_are_fixed_by_the_seed_and_differ_between_splits():
    a, b = ct.examples(50, seed=1), ct.examples(50, seed=1)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.allclose(a["x"], ct.examples(50, seed=1, split="validation")["x"])
    assert not np.allclose(a["t0"], ct.examples(50, seed=2)["t0"])


@pytest.mark.parametrize("options, message", [({"rho": 1.0}, "correlation must be in"),
                                              ({"num_tasks": 1}, "at least 2 tasks"),
                                              ({"num_tasks": 8, "features": 4}, "features")])
def test_impossible_structures_are_named(options, message):
    with pytest.raises(ValueError, match=message):
        ct.examples(10, **options)


def test_the_builder_stores_what_the_generator_draws(data_dir):
    loaded = load_correlated_tasks(train_size=30, validation_size=10, test_size=10, num_tasks=9, correlation=0.3,
                                   features=12, data_dir=data_dir)
    expected = ct.examples(30, num_tasks=9, rho=0.3, features=12, seed=0)
    for key, value in expected.items():
        np.testing.assert_array_equal(loaded["train"][key], value, err_msg=key)


def test_the_config_offers_num_tasks_tasks_and_its_gradients_conflict(data_dir):
    overrides = ["data.train_size=256", "data.validation_size=32", "data.test_size=32", "data.num_tasks=10",
                 "tasks={" + ", ".join(f"'t{i}': {{'weight': 1.0}}" for i in range(10)) + "}"]
    config = load_config("experiments/configs/correlated_tasks.py", overrides)
    _, tasks = check(config)
    assert [t.name for t in tasks] == [f"t{i}" for i in range(10)]
    with pytest.raises(KeyError, match="t10"):
        check(load_config("experiments/configs/correlated_tasks.py", ["tasks={'t10': {'weight': 1.0}}"]))
    experiment = build(config, data_dir)
    result = fit(experiment.model, experiment.tasks, experiment.train, epochs=1, batch_size=64, input_key="x",
                 weighting=experiment.weighting, progress=False)
    # the shared 4-unit representation cannot serve 10 directions: pairs of task gradients oppose
    assert result.history["train/conflicting_pairs"][0] >= 5
    cosines = np.array(result.history["train/gradient_cosines"][0])
    assert cosines.shape == (10, 10) and cosines.min() < -0.2
