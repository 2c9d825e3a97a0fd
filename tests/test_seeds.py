"""``fit_seeds``: S seeds trained as one vmapped program give, per seed, what ``fit(seed=s)`` gives."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mtl_jax as mtl
from mtl_jax.aggregation import mgda
from mtl_jax.balancing import Method, chain
from mtl_jax.models import MLP, hard_sharing
from mtl_jax.train.seeds import evaluate_seeds, fit_seeds
from mtl_jax.weighting import uncertainty

from conftest import toy_regression_classification

TASKS = (mtl.regression("y"), mtl.classification("label", 3, weight=0.5))
MODEL = hard_sharing(MLP((32, 16), dropout=0.2), TASKS)
TRAIN, VALIDATION = toy_regression_classification(100), toy_regression_classification(40, seed=1)
COMMON = dict(validation=VALIDATION, epochs=6, batch_size=16, input_key="x", progress=False)


def _largest_difference(a, b) -> float:
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in
               zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def _assert_history_close(expected: dict, actual: dict) -> None:
    assert set(actual) == set(expected)
    for key, values in expected.items():
        if key == "gradient_cosines" or key.endswith("gradient_cosines"):
            continue
        np.testing.assert_allclose(actual[key], values, rtol=1e-5, atol=1e-6, err_msg=key)


def test_each_seed_equals_its_separate_run():
    """Initialisation, dropout, shuffling, method state (UW's learned variances, MGDA's solver)
    and early stopping are per seed: every run of the group ends where fit(seed=s) ends
    (parameters, method state, history, best checkpoint's step)."""
    weighting = chain(uncertainty(("regression", "classification")), mgda())
    options = dict(COMMON, weighting=weighting, optimizer=optax.adam(0.1), best_metric="y/rmse",
                   early_stopping_patience=1)
    runs = fit_seeds(MODEL, TASKS, TRAIN, seeds=[0, 1, 2], **options)
    assert [run.seed for run in runs] == [0, 1, 2]
    for run in runs:
        separate = mtl.fit(MODEL, TASKS, TRAIN, seed=run.seed, **options)
        assert run.error is None
        assert _largest_difference(separate.state.params, run.state.params) < 1e-5
        assert _largest_difference(separate.state.weighting_state, run.state.weighting_state) < 1e-5
        assert int(run.state.step) == int(separate.state.step)
        _assert_history_close(separate.history, run.history)
        assert run.stopped_early == (len(separate.history["epoch"]) < options["epochs"])
    assert _largest_difference(runs[0].state.params, runs[1].state.params) > 1e-2  # the seeds differ
    # at least one run stopped before the others: the group trained on without changing it
    assert len({len(run.history["epoch"]) for run in runs}) > 1
    best = [run.best_params for run in runs]
    scores = evaluate_seeds(MODEL, TASKS, best, VALIDATION, batch_size=16, input_key="x")
    for run, score in zip(runs, scores):
        epoch = run.history["validation/y/rmse"].index(min(run.history["validation/y/rmse"]))
        assert run.best_step == (epoch + 1) * 7
        np.testing.assert_allclose(score["y/rmse"], run.history["validation/y/rmse"][epoch], rtol=1e-6)
        single = mtl.evaluate(MODEL, TASKS, run.best_params, VALIDATION, batch_size=16, input_key="x")
        np.testing.assert_allclose([score[k] for k in single], list(single.values()), rtol=1e-5, atol=1e-7)


def _unlucky(probability: float) -> Method:
    """A weighting that, with the given probability per step (drawn from the step's key), returns
    NaN weights: which runs fail depends on their seed only."""
    def update(info, state, key):
        nan = jax.random.uniform(key) < probability
        return jnp.where(nan, jnp.nan, jnp.ones_like(info.losses)), state
    return Method(lambda count: (), update, "losses")


UNLUCKY = _unlucky(0.03)


def test_a_failing_seed_ends_alone_with_the_error_fit_raises_and_skips_are_counted_per_seed():
    options = dict(COMMON, weighting=UNLUCKY, validation=None, epochs=2)
    seeds = [0, 1, 2, 3]
    runs = fit_seeds(MODEL, TASKS, TRAIN, seeds=seeds, **options)
    outcomes = []
    for run in runs:
        try:
            separate = mtl.fit(MODEL, TASKS, TRAIN, seed=run.seed, **options)
        except FloatingPointError as error:
            what = str(error).split("); training stopped")[0] + ")"  # "non-finite ... at step N (epoch E)"
            assert run.state is None and run.error == f"FloatingPointError: {what} of seed {run.seed}"
            outcomes.append("failed")
        else:
            assert run.error is None
            assert _largest_difference(separate.state.params, run.state.params) < 1e-5
            outcomes.append("finished")
    assert set(outcomes) == {"failed", "finished"}  # the case tests something

    skipping = dict(options, nonfinite="skip")
    counts = [run.history["skipped_steps"] for run in fit_seeds(MODEL, TASKS, TRAIN, seeds=seeds, **skipping)]
    assert counts == [mtl.fit(MODEL, TASKS, TRAIN, seed=seed, **skipping).history["skipped_steps"] for seed in seeds]
    assert len(set(map(tuple, counts))) > 1


@pytest.mark.parametrize("seeds, message", [([], "at least one seed"), ([1, 1], "distinct"), ([0, -1], "seed")])
def test_bad_seeds_are_named(seeds, message):
    with pytest.raises(ValueError, match=message):
        fit_seeds(MODEL, TASKS, TRAIN, seeds=seeds, **COMMON)


def test_batches_of_your_own_reach_every_seed_and_a_used_up_iterator_is_refused():
    from mtl_jax.data import batches
    from mtl_jax.train.seeds import _stacked_batches

    own = list(batches(TRAIN, 16, seed=3))
    stacked = list(_stacked_batches(mtl.data.batch_streams.as_dataset(own), 16, (0, 1, 2), 0, None))
    assert len(stacked) == len(own)
    for mine, batch in zip(stacked, own):
        for key, value in batch.items():
            assert mine[key].shape == (3, *value.shape)
            np.testing.assert_array_equal(mine[key][2], value)
    with pytest.raises(ValueError, match="iterator of batches"):
        fit_seeds(MODEL, TASKS, iter(own), seeds=[0, 1], epochs=2, input_key="x")
