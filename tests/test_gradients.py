"""The standalone gradient engine: any params -> losses[T] function, any method, both levels."""
import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mtl_jax.aggregation import graddrop, mgda, upgrad
from mtl_jax.balancing import chain
from mtl_jax.gradients import balanced_grads, balanced_grads_at_features, task_gramian
from mtl_jax.weighting import famo, static

from conftest import jit_once

KEY = jax.random.PRNGKey(0)


class Trunk(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.tanh(nn.Dense(6)(x))


class Heads(nn.Module):
    @nn.compact
    def __call__(self, z):
        return nn.Dense(1)(z)[:, 0], nn.Dense(3)(z)


TRUNK, HEADS = Trunk(), Heads()
X = jax.random.normal(jax.random.PRNGKey(1), (16, 5))
Y = X[:, 0] - 2 * X[:, 1]
LABEL = (X[:, 2] > 0).astype(jnp.int32) + (X[:, 3] > 1)
PARAMS = {"trunk": TRUNK.init(jax.random.PRNGKey(2), X)["params"],
          "heads": HEADS.init(jax.random.PRNGKey(3), jnp.zeros((1, 6)))["params"]}


def represent(params, x):
    return TRUNK.apply({"params": params["trunk"]}, x)


def heads(params, z):
    price, logits = HEADS.apply({"params": params["heads"]}, z)
    # a third task that conflicts with the first: it wants the price prediction to go the other way
    return jnp.stack([jnp.mean((price - Y) ** 2), optax.softmax_cross_entropy_with_integer_labels(logits, LABEL).mean(),
                      jnp.mean((price + Y) ** 2)])


def losses(params, x):
    return heads(params, represent(params, x))


def _flat(tree):
    return jnp.concatenate([leaf.ravel() for leaf in jax.tree.leaves(tree)])


def test_the_gramian_is_that_of_the_full_jacobian():
    values, gramian = jit_once(task_gramian, static_argnums=0)(losses, PARAMS, X)
    jacobian = jnp.stack([_flat(g) for g in (jax.tree.map(lambda leaf: leaf[i], jit_once(jax.jacrev(losses))(PARAMS, X))
                                             for i in range(3))])
    np.testing.assert_allclose(values, losses(PARAMS, X), rtol=1e-6)
    np.testing.assert_allclose(gramian, jacobian @ jacobian.T, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("level", ["parameter", "feature"])
@pytest.mark.parametrize("method", [static([1.0, 0.5, 2.0]), chain(static([1.0, 0.5, 2.0]), mgda()), famo()],
                         ids=["static", "mgda", "famo"])
def test_the_result_is_the_gradient_of_the_weighted_sum_of_losses(level, method):
    if level == "parameter":
        run = jit_once(lambda p, s, k: balanced_grads(losses, p, method, s, k, X))
    else:
        run = jit_once(lambda p, s, k: balanced_grads_at_features(represent, heads, p, method, s, k, X))
    result = run(PARAMS, method.init(3), KEY)
    expected = jit_once(jax.grad(lambda p: jnp.sum(result.weights * losses(p, X))))(PARAMS)
    chex.assert_trees_all_close(result.grads, expected, rtol=1e-4, atol=1e-6)
    assert (result.gramian is None) == (method.needs == "losses")


def test_parameter_level_upgrad_conflicts_with_no_task():
    result = jit_once(lambda p: balanced_grads(losses, p, upgrad(), upgrad().init(3), KEY, X))(PARAMS)
    jacobian = jit_once(jax.jacrev(losses))(PARAMS, X)
    d = _flat(result.grads)
    for i in range(3):
        g = _flat(jax.tree.map(lambda leaf: leaf[i], jacobian))
        assert float(g @ d) >= -1e-5 * float(jnp.linalg.norm(g) * jnp.linalg.norm(d)), i
    assert float(jnp.min(result.gramian)) < 0


def test_a_per_coordinate_method_runs_at_the_feature_level_only():
    method = chain(static([1.0, 1.0, 1.0]), graddrop())
    result = balanced_grads_at_features(represent, heads, PARAMS, method, method.init(3), KEY, X)
    assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(result.grads))
    np.testing.assert_allclose(result.weights, 1.0)
    with pytest.raises(ValueError, match="balanced_grads_at_features"):
        balanced_grads(losses, PARAMS, method, method.init(3), KEY, X)


def test_a_loss_function_that_does_not_return_per_task_losses_is_refused():
    with pytest.raises(ValueError, match=r"\[T\] vector of per-task losses, got shape \(\)"):
        balanced_grads(lambda p, x: jnp.sum(losses(p, x)), PARAMS, static([1.0]), (), KEY, X)
