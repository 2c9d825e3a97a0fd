"""Loss-weighting methods: each one's defining property, and every one inside a resumable run."""
import shutil

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mtl_jax as mtl
from mtl_jax.experiment import make_weighting
from mtl_jax.models import MLP, hard_sharing
from mtl_jax.registry import WEIGHTINGS
from mtl_jax.train import create_train_state, make_train_step
from mtl_jax.balancing import Info, Method, chain
from mtl_jax.weighting import (db_mtl, dwa, famo, geometric, gradnorm, imtl_l, log_losses,
                               random_weighting, static, uncertainty)

from conftest import toy_regression_classification

KEY = jax.random.PRNGKey(0)
TASKS = (mtl.regression("y"), mtl.classification("label", 3, weight=0.5))
MODEL = hard_sharing(MLP((16,)), TASKS)


def _run(method, losses_per_step, grad_norms=None):
    """Weights of every step for a ``[steps, T]`` loss sequence (and gradient norms: a diagonal
    Gramian for methods that need one), and the final state."""
    losses_per_step = jnp.asarray(losses_per_step, jnp.float32)
    norms = jnp.ones_like(losses_per_step) if grad_norms is None else \
        jnp.broadcast_to(jnp.asarray(grad_norms, jnp.float32), losses_per_step.shape)
    state = method.init(losses_per_step.shape[1])

    def body(state, inputs):
        step, losses, norm = inputs
        gramian = jnp.diag(norm ** 2) if method.needs == "feature_gramian" else None
        weights, state = method.update(Info(losses, gramian), state, jax.random.fold_in(KEY, step))
        return state, weights

    steps = jnp.arange(len(losses_per_step))
    state, weights = jax.jit(lambda s: jax.lax.scan(body, s, (steps, losses_per_step, norms)))(state)
    return np.asarray(weights), state


def test_uncertainty_weighting_learns_the_optimal_variances():
    losses = np.tile([[0.3, 4.0, 0.8]], (3000, 1))
    weights, state = _run(uncertainty(["regression", "regression", "classification"], learning_rate=0.05), losses)
    np.testing.assert_allclose(np.exp(state.log_variance), [0.3, 4.0, 1.6], rtol=2e-2)  # sigma^2 = L, 2L
    np.testing.assert_allclose(weights[-1], [0.5 / 0.3, 0.5 / 4.0, 1.0 / 1.6], rtol=2e-2)
    np.testing.assert_allclose(weights[0], [0.5, 0.5, 1.0])  # s = 0 at the start


def test_dwa_matches_its_formula_on_a_loss_history():
    period, temperature = 2, 2.0
    epoch_means = np.array([[4.0, 1.0], [2.0, 0.9], [1.0, 0.8]])
    steps = np.repeat(epoch_means, period, axis=0) + np.tile([[0.1, 0.02], [-0.1, -0.02]], (3, 1))
    weights, _ = _run(dwa(period, temperature), steps)
    np.testing.assert_allclose(weights[:2 * period], 1.0)  # the first two epochs
    ratio = epoch_means[1] / epoch_means[0]
    expected = 2 * np.exp(ratio / temperature) / np.exp(ratio / temperature).sum()
    np.testing.assert_allclose(weights[2 * period:], np.tile(expected, (period, 1)), rtol=1e-5)
    np.testing.assert_allclose(weights.sum(1), 2.0, rtol=1e-6)
    assert weights[-1, 1] > weights[-1, 0]  # the task whose loss fell least gets more weight


def test_rlw_weights_sum_to_t_and_change_with_the_key():
    method = random_weighting()
    losses = jnp.ones(5)
    w1, _ = method.update(Info(losses), method.init(5), jax.random.PRNGKey(1))
    w2, _ = method.update(Info(losses), method.init(5), jax.random.PRNGKey(2))
    again, _ = method.update(Info(losses), method.init(5), jax.random.PRNGKey(1))
    np.testing.assert_allclose([w1.sum(), w2.sum()], 5.0, rtol=1e-6)
    assert (w1 > 0).all() and not np.allclose(w1, w2)
    np.testing.assert_array_equal(w1, again)


def _task_losses(theta):
    return jnp.stack([jnp.sum((theta - 1.0) ** 2) + 0.1, 3.0 * jnp.sum(jnp.abs(theta + 0.5)), jnp.exp(theta[0])])


def _weighted_gradient(method, theta, scale=jnp.ones(3)):
    losses = scale * _task_losses(theta)
    weights, _ = method.update(Info(losses), method.init(3), KEY)
    return jax.grad(lambda t: jnp.sum(jax.lax.stop_gradient(weights) * scale * _task_losses(t)))(theta)


def test_gls_weights_give_the_gradient_of_the_geometric_mean():
    theta = jnp.array([0.3, -0.2, 0.7])
    geometric_mean = lambda t: jnp.exp(jnp.mean(jnp.log(_task_losses(t))))  # noqa: E731
    np.testing.assert_allclose(_weighted_gradient(geometric(), theta), jax.grad(geometric_mean)(theta), rtol=1e-5)
    scaled = _weighted_gradient(geometric(), theta, jnp.array([100.0, 1.0, 0.01]))
    unit = lambda g: g / jnp.linalg.norm(g)  # noqa: E731
    np.testing.assert_allclose(unit(scaled), unit(_weighted_gradient(geometric(), theta)), rtol=1e-5)


def test_log_losses_make_any_method_invariant_to_loss_scales():
    theta = jnp.array([0.3, -0.2, 0.7])
    method = chain(log_losses(eps=0.0), static([1.0, 1.0, 1.0]))
    log_sum = lambda t: jnp.sum(jnp.log(_task_losses(t)))  # noqa: E731
    np.testing.assert_allclose(_weighted_gradient(method, theta), jax.grad(log_sum)(theta), rtol=1e-5)
    np.testing.assert_allclose(_weighted_gradient(method, theta, jnp.array([1e3, 1.0, 1e-3])),
                               _weighted_gradient(method, theta), rtol=1e-4)


def test_imtl_l_drives_every_scaled_loss_to_one():
    losses = np.tile([[0.05, 2.0, 30.0]], (4000, 1))
    weights, state = _run(imtl_l(learning_rate=0.05), losses)
    np.testing.assert_allclose(weights[-1] * losses[-1], 1.0, rtol=2e-2)
    np.testing.assert_allclose(weights[0], 1.0)


def test_famo_raises_the_weight_of_the_task_whose_loss_falls_slowest():
    steps = 200
    fast = 2.0 * 0.98 ** np.arange(steps)
    slow = 2.0 * 0.999 ** np.arange(steps)
    weights, state = _run(famo(beta=0.025), np.stack([fast, slow], 1))
    z = jax.nn.softmax(state.logits)
    assert z[1] > 0.6 > 0.4 > z[0]
    # w = z / (c L): the update is the normalised gradient of sum_i z_i log L_i
    z_used = np.asarray(z)  # logits of the last update are those the last weights used
    expected = z_used / (np.array([fast[-1], slow[-1]]) * np.sum(z_used / np.array([fast[-1], slow[-1]])))
    np.testing.assert_allclose(weights[-1], expected, rtol=1e-5)
    np.testing.assert_allclose(weights[0] * [fast[0], slow[0]], 1.0, rtol=1e-6)  # z uniform: w_i L_i = z_i / c


def test_gradnorm_moves_weighted_gradient_norms_to_the_target_ratio():
    norms = np.array([1.0, 10.0, 4.0])
    weights, _ = _run(gradnorm(alpha=0.0, learning_rate=0.01), np.ones((3000, 3)), norms)
    np.testing.assert_allclose(weights[-1] * norms, np.mean(weights[-1] * norms), rtol=0.05)  # equal norms
    np.testing.assert_allclose(weights.sum(1), 3.0, rtol=1e-5)
    # losses fallen to 1/2, 1/2 and 1/8 of their start: r = L~/mean(L~), target G_i ~ r_i^alpha
    losses = np.concatenate([np.ones((1, 3)), np.tile([[0.5, 0.5, 0.125]], (3000, 1))])
    weights, _ = _run(gradnorm(alpha=1.0, learning_rate=0.01), losses, np.ones(3))
    ratio = np.array([0.5, 0.5, 0.125]) / np.mean([0.5, 0.5, 0.125])
    np.testing.assert_allclose(weights[-1] / weights[-1].sum(), ratio / ratio.sum(), rtol=0.05)


def test_db_mtl_scales_every_log_loss_gradient_to_the_largest():
    losses, norms = np.array([[0.5, 4.0, 2.0]]), np.array([1.0, 2.0, 8.0])
    weights, _ = _run(db_mtl(beta=0.0), losses, norms)
    log_norms = norms / losses[0]
    np.testing.assert_allclose(weights[0] * norms, np.max(log_norms), rtol=1e-5)  # |w_i grad L_i| all equal
    # the EMA of norms: b_t = beta / t^sigma
    ema_weights, state = _run(db_mtl(beta=0.9, beta_sigma=0.5), np.ones((2, 2)), np.array([[1.0, 2.0], [3.0, 2.0]]))
    b1, b2 = 0.9, 0.9 / np.sqrt(2)
    first = (1 - b1) * np.array([1.0, 2.0])
    np.testing.assert_allclose(state.norms, (1 - b2) * np.array([3.0, 2.0]) + b2 * first, rtol=1e-5)


def test_the_feature_level_step_equals_the_ordinary_step_for_the_same_weights():
    data = toy_regression_classification(16)
    batch = {**data, "_valid": np.ones(16, np.float32)}
    fixed = jnp.array([1.0, 0.5])
    feature = Method(lambda n: (), lambda info, state, key: (fixed, state), "feature_gramian")
    results = []
    for weighting in (static([1.0, 0.5]), feature):
        state = create_train_state(MODEL, TASKS, optax.sgd(0.1), weighting, data["x"][:2])
        results.append(jax.device_get(make_train_step(MODEL, TASKS, optax.sgd(0.1), weighting, "x")(state, batch)))
    chex.assert_trees_all_close(results[0][0].params, results[1][0].params, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(results[0][1]["grad_norm"], results[1][1]["grad_norm"], rtol=1e-5)


def test_feature_level_methods_need_a_model_with_a_shared_representation():
    with pytest.raises(TypeError, match="must define 'represent'"):
        make_train_step(MLP((4,)), TASKS, optax.sgd(0.1), gradnorm(), "x")


@pytest.mark.parametrize("name", [n for n, _ in WEIGHTINGS.describe()])
def test_every_method_stays_finite_on_zero_and_huge_losses(name):
    tasks = (mtl.regression("a"), mtl.classification("b", 3), mtl.regression("c"))
    method = make_weighting(name, tasks, {}, steps_per_epoch=2)
    losses = [[0.0, 1e30, 1.0], [0.0, 1e-30, 2.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]
    weights, _ = _run(method, losses, [[0.0, 1e3, 1.0], [1.0, 0.0, 1e-30], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    chex.assert_shape(weights, (4, 3))
    assert np.isfinite(weights).all() and (weights >= 0).all()


@pytest.mark.parametrize("name,log",
                         [(n, False) for n, _ in WEIGHTINGS.describe()] + [("equal", True)])
def test_every_method_trains_and_resumes_bitwise_from_a_checkpoint(name, log, tmp_path):
    data, validation = toy_regression_classification(40, seed=1), toy_regression_classification(16, seed=2)
    method = make_weighting(name, TASKS, {}, steps_per_epoch=5, log=log)
    kwargs = {"validation": validation, "epochs": 3, "batch_size": 8, "input_key": "x", "progress": False,
              "optimizer": optax.adam(1e-2), "weighting": method, "checkpoint_every_steps": 3,
              "keep_checkpoints": 10, "tensorboard": False, "plots": False}
    state, history = mtl.fit(MODEL, TASKS, data, workdir=tmp_path / "a", **kwargs)
    assert history["train/y/loss"][-1] < history["train/y/loss"][0]
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    for step in ("9", "10", "12", "15"):
        shutil.rmtree(tmp_path / "b" / "checkpoints" / step)
    resumed, resumed_history = mtl.fit(MODEL, TASKS, data, workdir=tmp_path / "b", resume=True, **kwargs)
    chex.assert_trees_all_equal(jax.device_get(resumed), jax.device_get(state))
    assert resumed_history == history
