"""Both AD modes through every trunk and convolutional architecture: ``jax.jvp``,
``jax.linearize``, ``jax.jacfwd`` and Hessian-vector products (forward over reverse).

mtl_jax's CPU layers (``conv="fast"``: im2col and per-tap convolutions, the fused
conv-ReLU-pool stem, the int8-index max pooling) must give what XLA's own layers
(``conv="native"``) give, in both modes and to second order."""
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtl_jax as mtl
from mtl_jax.models import MLP, FieldEmbedding, ResNet, SeedCNN, TextEncoder
from mtl_jax.models.mtan import mtan
from mtl_jax.models.soft_sharing import task_columns

from conftest import init_variables, jit_once

TASKS = (mtl.regression("price"), mtl.classification("kind", 3))
IMAGE = jnp.asarray(np.random.default_rng(0).integers(0, 255, (3, 12, 12, 3)), jnp.uint8)

CONV_TRUNKS = {  # the trunks with a ``conv`` option, small: second order against XLA's layers
    "seed_network": lambda conv: mtl.models.hard_sharing(SeedCNN((4, 8), conv=conv), TASKS, head_hidden=(8,)),
    "resnet": lambda conv: ResNet((1, 1), (8, 16), conv=conv),
}
CONV_ARCHITECTURES = {  # architectures with their own conv stages (the same layer functions): first order
    "mtan": lambda conv: mtan(TASKS, features=(4, 8), conv=conv),
    "cross_stitch": lambda conv: task_columns(TASKS, features=(4, 8), layer="conv", conv=conv),
}


def _scalar(model, x):
    """A smooth scalar of the model's outputs (all tasks' for an architecture): its Hessian is not zero."""
    def f(params):
        leaves = jax.tree_util.tree_leaves(model.apply(params, x))
        return sum(jnp.sum(jnp.sin(leaf.astype(jnp.float32))) for leaf in leaves)
    return f


@functools.partial(jit_once, static_argnums=1)
def _direction(params, seed=1):
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    return jax.tree_util.tree_unflatten(tree, [jax.random.normal(k, p.shape, p.dtype) for k, p in zip(keys, leaves)])


def _hvp(f, params, v):
    return jax.jvp(jax.grad(f), (params,), (v,))[1]


def _both_modes(f):
    """Jitted: f's value, its JVP along v, the gradient as the transpose of ``jax.linearize``'s
    linear map (checked against that map's JVP), and the Hessian-vector product forward over reverse."""
    @jit_once
    def run(params, v):
        value, tangent = jax.jvp(f, (params,), (v,))
        _, linear = jax.linearize(f, params)
        grad = jax.linear_transpose(linear, params)(jnp.ones_like(value))[0]
        return value, tangent, linear(v), grad, _hvp(f, params, v)
    return run


@pytest.mark.parametrize("name", list(CONV_TRUNKS))
def test_forward_mode_and_hessian_vector_products_equal_xlas_layers(name):
    fast, native = CONV_TRUNKS[name]("fast"), CONV_TRUNKS[name]("native")
    params = init_variables(native, jax.random.PRNGKey(0), IMAGE)
    v = _direction(params)
    value, tangent, linearized, grad, hvp = _both_modes(_scalar(fast, IMAGE))(params, v)
    ref_value, ref_tangent, _, ref_grad, ref_hvp = _both_modes(_scalar(native, IMAGE))(params, v)
    np.testing.assert_allclose(value, ref_value, rtol=1e-4)
    np.testing.assert_allclose(tangent, ref_tangent, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(linearized, ref_tangent, rtol=1e-3, atol=1e-3)
    chex.assert_trees_all_close(grad, ref_grad, rtol=2e-3, atol=2e-4)
    scale = max(float(jnp.max(jnp.abs(leaf))) for leaf in jax.tree_util.tree_leaves(ref_hvp))
    chex.assert_trees_all_close(hvp, ref_hvp, rtol=2e-3, atol=2e-4 * scale)
    assert scale > 1e-3  # the products are not trivially zero


@pytest.mark.parametrize("name", list(CONV_ARCHITECTURES))
def test_forward_mode_through_conv_architectures_equals_xlas_layers(name):
    fast, native = CONV_ARCHITECTURES[name]("fast"), CONV_ARCHITECTURES[name]("native")
    params = init_variables(native, jax.random.PRNGKey(0), IMAGE)
    v = _direction(params)
    tangent = jit_once(lambda p, v: jax.jvp(_scalar(fast, IMAGE), (p,), (v,))[1])(params, v)
    reference = jit_once(lambda p, v: jax.jvp(_scalar(native, IMAGE), (p,), (v,))[1])(params, v)
    np.testing.assert_allclose(tangent, reference, rtol=1e-3, atol=1e-3)


def _reverse_over_reverse(f, params, v):
    return jax.grad(lambda p: sum(jnp.vdot(g, w) for g, w in zip(jax.tree_util.tree_leaves(jax.grad(f)(p)),
                                                                 jax.tree_util.tree_leaves(v))))(params)


def test_reverse_over_reverse_through_the_fast_layers_equals_forward_over_reverse():
    model = SeedCNN((8, 16), conv="fast")
    params = init_variables(model, jax.random.PRNGKey(0), IMAGE)
    v, f = _direction(params), _scalar(model, IMAGE)
    hvp = jit_once(lambda p, v: _hvp(f, p, v))(params, v)
    scale = max(float(jnp.max(jnp.abs(leaf))) for leaf in jax.tree_util.tree_leaves(hvp))
    chex.assert_trees_all_close(jit_once(lambda p, v: _reverse_over_reverse(f, p, v))(params, v), hvp,
                                rtol=2e-3, atol=2e-4 * scale)


def test_jacfwd_through_the_fast_layers_equals_jacrev():
    model = SeedCNN((4, 8), conv="fast")
    params = init_variables(model, jax.random.PRNGKey(0), IMAGE[:1])
    per_image = lambda bias: model.apply(  # noqa: E731
        {"params": {**params["params"], "Conv_1": {**params["params"]["Conv_1"], "bias": bias}}}, IMAGE).sum(axis=(1, 2))
    bias = params["params"]["Conv_1"]["bias"] + 0.1
    np.testing.assert_allclose(jit_once(jax.jacfwd(per_image))(bias), jit_once(jax.jacrev(per_image))(bias),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name,model,x", [
    ("mlp", MLP((16, 8)), jnp.asarray(np.random.default_rng(2).normal(size=(4, 6)), jnp.float32)),
    ("text", TextEncoder(vocab_size=50, embed_dim=16, layers=1, num_heads=2, mlp_dim=16),
     jnp.asarray(np.random.default_rng(3).integers(1, 50, (4, 7)), jnp.int32)),
    ("fields", FieldEmbedding(vocab_sizes=(5, 7), embed_dim=4, features=(8,)),
     jnp.asarray(np.random.default_rng(4).integers(0, 5, (4, 2)), jnp.int32)),
])
def test_every_other_trunk_has_consistent_hessian_vector_products(name, model, x):
    params = init_variables(model, jax.random.PRNGKey(0), x)
    v, f = _direction(params), _scalar(model, x)
    _, tangent, linearized, grad, hvp = _both_modes(f)(params, v)
    np.testing.assert_allclose(linearized, tangent, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(tangent, sum(jnp.vdot(g, w) for g, w in zip(
        jax.tree_util.tree_leaves(grad), jax.tree_util.tree_leaves(v))), rtol=1e-4, atol=1e-5)
    chex.assert_trees_all_close(hvp, jit_once(lambda p, v: _reverse_over_reverse(f, p, v))(params, v),
                                rtol=1e-4, atol=1e-5)
