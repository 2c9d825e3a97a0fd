import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mtl_jax as mtl
from mtl_jax.data import batches
from mtl_jax.models import MLP, hard_sharing
from mtl_jax.tasks import task_losses
from mtl_jax.train import create_train_state, make_train_step
from mtl_jax.weighting import static

from conftest import toy_regression_classification

TASKS = (mtl.regression("y"), mtl.classification("label", 3, weight=0.5))
MODEL = hard_sharing(MLP((32, 16)), TASKS)


def _fit(data, **kwargs):
    kwargs = {"epochs": 3, "batch_size": 16, "input_key": "x", "progress": False, **kwargs}
    return mtl.fit(MODEL, TASKS, data, **kwargs)


def test_equal_weights_reproduce_plain_summed_loss_training():
    data = toy_regression_classification(48)
    tasks = (mtl.regression("y"), mtl.classification("label", 3))
    model = hard_sharing(MLP((16,)), tasks)
    opt = optax.adam(1e-2)
    state = create_train_state(model, tasks, opt, static([1.0, 1.0]), data["x"][:4], seed=0)
    params, opt_state = state.params, opt.init(state.params)
    step = make_train_step(model, tasks, opt, static([1.0, 1.0]), "x")

    @jax.jit
    def plain_step(params, opt_state, batch):  # summed-loss training written out by hand
        def summed(p):
            preds = model.apply({"params": p}, batch["x"])
            return jnp.sum(task_losses(tasks, preds, batch)[0])
        updates, opt_state = opt.update(jax.grad(summed)(params), opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    for batch in batches(data, 16):
        params, opt_state = plain_step(params, opt_state, batch)
        state, _ = step(state, batch)
    chex.assert_trees_all_close(state.params, params, rtol=1e-5, atol=1e-6)


def test_a_zero_lambda_leaves_that_tasks_head_untouched():
    data = toy_regression_classification(32)
    tasks = (mtl.regression("y", weight=1.0), mtl.classification("label", 3, weight=0.0))
    model = hard_sharing(MLP((16,)), tasks)
    opt = optax.sgd(0.1)
    state = create_train_state(model, tasks, opt, static([1.0, 0.0]), data["x"][:4])
    before = jax.tree.map(np.array, state.params)
    state, out = make_train_step(model, tasks, opt, static([1.0, 0.0]), "x")(state, next(batches(data, 32)))
    chex.assert_trees_all_equal(state.params["heads_label"], before["heads_label"])
    assert not np.allclose(state.params["heads_y"]["Dense_0"]["kernel"], before["heads_y"]["Dense_0"]["kernel"])
    np.testing.assert_array_equal(out["weights"], [1.0, 0.0])


def test_short_training_lowers_every_tasks_loss():
    data = toy_regression_classification(256)
    data["click"] = (data["x"][:, 4] > 0).astype(np.float32)
    tasks = TASKS + (mtl.binary("click"),)
    model = hard_sharing(MLP((32, 16)), tasks)
    _, history = mtl.fit(model, tasks, data, epochs=8, batch_size=32, input_key="x",
                         optimizer=optax.adam(1e-2), progress=False)
    for task in tasks:
        losses = history[f"train/{task.name}/loss"]
        assert losses[-1] < 0.7 * losses[0], (task.name, losses)


def test_same_seed_same_run_and_different_seed_different_run():
    data = toy_regression_classification(40)
    model = hard_sharing(MLP((16,), dropout=0.2), TASKS)
    run = lambda seed: mtl.fit(model, TASKS, data, validation=data, epochs=2, batch_size=16, input_key="x",
                               seed=seed, progress=False)
    (s1, h1), (s2, h2), (_s3, h3) = run(0), run(0), run(1)
    chex.assert_trees_all_equal(s1.params, s2.params)
    assert h1 == h2
    assert h1["train/y/loss"] != h3["train/y/loss"]


def test_partial_last_batch_does_not_recompile_and_counts_exactly():
    data = toy_regression_classification(37)  # 16 + 16 + 5
    state, history = _fit(data, validation=data)
    assert int(state.step) == 3 * 3
    direct = mtl.evaluate(MODEL, TASKS, state.params, data, batch_size=7, input_key="x")
    whole = mtl.evaluate(MODEL, TASKS, state.params, data, batch_size=64, input_key="x")
    for key in whole:
        np.testing.assert_allclose(direct[key], whole[key], rtol=1e-5)
    np.testing.assert_allclose(history["validation/y/rmse"][-1], whole["y/rmse"], rtol=1e-5)


def test_train_step_compiles_once_for_all_batches():
    data = toy_regression_classification(37)
    opt, weighting = optax.adam(1e-3), static([1.0, 0.5])
    state = create_train_state(MODEL, TASKS, opt, weighting, data["x"][:2])
    step = make_train_step(MODEL, TASKS, opt, weighting, "x")
    for epoch in range(2):
        for batch in batches(data, 16, seed=0, epoch=epoch):
            state, _ = step(state, batch)
    assert step._cache_size() == 1


def test_predict_returns_values_probabilities_and_labels():
    data = toy_regression_classification(21)
    state, _ = _fit(data, epochs=1)
    out = mtl.predict(MODEL, TASKS, state.params, data["x"], batch_size=8)
    chex.assert_shape([out["y"], out["label"]["probabilities"], out["label"]["labels"]], [(21,), (21, 3), (21,)])
    np.testing.assert_allclose(out["label"]["probabilities"].sum(1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(out["label"]["labels"], out["label"]["probabilities"].argmax(1))
    raw = MODEL.apply({"params": state.params}, data["x"])
    np.testing.assert_allclose(out["y"], raw["y"][:, 0], rtol=1e-5, atol=1e-6)


def test_non_finite_loss_stops_training_and_names_the_task():
    data = toy_regression_classification(32)
    broken = (mtl.regression("y", loss=lambda p, t: jnp.log(p - t - 1e6)), TASKS[1])
    with pytest.raises(FloatingPointError, match=r"task\(s\) \['y'\] at step 1 \(epoch 1\)"):
        mtl.fit(hard_sharing(MLP((8,)), broken), broken, data, epochs=1, input_key="x", progress=False)


def test_a_non_finite_step_leaves_parameters_moments_and_weighting_state_bit_for_bit():
    data = toy_regression_classification(16)
    opt, weighting = optax.adam(1e-2), mtl.weighting.uncertainty(["regression", "classification"])
    state = create_train_state(MODEL, TASKS, opt, weighting, data["x"][:4], seed=0)
    step = make_train_step(MODEL, TASKS, opt, weighting, "x")
    state, _ = step(state, next(batches(data, 16)))  # moments and weighting state no longer at their init
    before = jax.tree.map(np.array, (state.params, state.opt_state, state.weighting_state))
    bad = dict(next(batches(data, 16)), x=jnp.full_like(data["x"][:16], jnp.nan))
    state, out = step(state, bad)
    assert not bool(out["finite"]) and int(state.step) == 2
    chex.assert_trees_all_equal((state.params, state.opt_state, state.weighting_state), before)
    state, out = step(state, next(batches(data, 16)))
    assert bool(out["finite"])
    assert not np.array_equal(np.asarray(jax.tree.leaves(state.params)[0]), jax.tree.leaves(before[0])[0])


def test_fit_continues_from_a_given_state():
    data = toy_regression_classification(32)
    state, _ = _fit(data, epochs=1)
    steps = int(state.step)
    more, _ = _fit(data, epochs=1, state=state)  # fit donates the state it is given
    assert int(more.step) == 2 * steps


def test_repeated_fit_calls_reuse_the_compiled_step():
    data = toy_regression_classification(16)
    _fit(data, epochs=1)
    before = make_train_step.cache_info().misses
    _fit(data, epochs=1)
    assert make_train_step.cache_info().misses == before


def test_without_a_terminal_each_epoch_prints_one_line(capsys):
    data, validation = toy_regression_classification(32, seed=1), toy_regression_classification(16, seed=2)
    tasks = (mtl.regression("y"), mtl.classification("label", 3))
    _, history = mtl.fit(hard_sharing(MLP((8,)), tasks), tasks, data, validation=validation, epochs=2,
                         batch_size=8, input_key="x")  # progress=None; pytest's stderr is no terminal
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and lines[1].startswith("epoch 2/2 "), lines
    rmse = history["validation/y/rmse"][1]
    assert f"y: loss {history['train/y/loss'][1]:.4g} rmse" in lines[1] and f"{rmse:.4g})" in lines[1]
    assert "label: loss" in lines[1] and "accuracy" in lines[1]
    mtl.fit(hard_sharing(MLP((8,)), tasks), tasks, data, epochs=1, batch_size=8, input_key="x", progress=False)
    assert capsys.readouterr().err == ""
