"""The fast CPU convolution and pooling give XLA's values and gradients."""
import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from mtl_jax.models import ResNet, SeedCNN
from mtl_jax.models import conv as conv_module
from mtl_jax import cpu as mtl_cpu
from conftest import init_variables, jit_once
from mtl_jax.models.conv import conv_for_platform, conv_general_dilated, fast_pooling, max_pool, relu_max_pool

DN = ("NHWC", "HWIO", "NHWC")


def _pair(shape_x, shape_w, seed=0):
    rng = np.random.default_rng(seed)
    return (jnp.asarray(rng.normal(size=shape_x), jnp.float32),
            jnp.asarray(rng.normal(size=shape_w) / np.sqrt(np.prod(shape_w[:3])), jnp.float32))


CASES = [  # (x shape, w shape, strides, padding, dilation): every form the trunks use, and more
    ((4, 16, 16, 3), (3, 3, 3, 32), (1, 1), "SAME", (1, 1)),      # RGB stem
    ((4, 8, 8, 32), (3, 3, 32, 64), (1, 1), "SAME", (1, 1)),      # seed CNN conv 2
    ((4, 9, 9, 16), (3, 3, 16, 8), (2, 2), "SAME", (1, 1)),       # ResNet stride-2 3x3, odd size
    ((4, 8, 8, 16), (1, 1, 16, 32), (2, 2), "SAME", (1, 1)),      # ResNet 1x1 shortcut
    ((2, 10, 12, 5), (3, 2, 5, 7), (1, 2), "VALID", (1, 1)),      # rectangular kernel, VALID
    ((2, 12, 12, 4), (3, 3, 4, 6), (1, 1), ((2, 1), (0, 3)), (2, 2)),  # explicit pads, dilation
]


@pytest.fixture(params=["im2col", "taps"])
def path(request, monkeypatch):
    """Forces every convolution through one of the two CPU paths."""
    monkeypatch.setattr(conv_module, "GEMM_MAX_PATCH", 10**9 if request.param == "im2col" else 0)
    return request.param


@pytest.mark.parametrize("shape_x,shape_w,strides,padding,dilation", CASES)
def test_values_and_gradients_equal_xlas_convolution(path, shape_x, shape_w, strides, padding, dilation):
    x, w = _pair(shape_x, shape_w)

    def loss(conv, x, w):
        y = conv(x, w, strides, padding, rhs_dilation=dilation, dimension_numbers=DN)
        return jnp.sum(jnp.sin(y)), y

    (value, y), grads = jax.value_and_grad(lambda x, w: loss(conv_general_dilated, x, w), (0, 1),
                                           has_aux=True)(x, w)
    (ref_value, ref_y), ref_grads = jax.value_and_grad(lambda x, w: loss(lax.conv_general_dilated, x, w), (0, 1),
                                                       has_aux=True)(x, w)
    chex.assert_trees_all_close(y, ref_y, rtol=1e-5, atol=1e-5)
    chex.assert_trees_all_close(grads, ref_grads, rtol=1e-4, atol=1e-4)


def test_unsupported_forms_fall_back_to_xla():
    x, w = _pair((2, 8, 8, 4), (3, 3, 2, 6))
    grouped = conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=DN, feature_group_count=2)
    np.testing.assert_allclose(grouped, lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=DN,
                                                                 feature_group_count=2), rtol=1e-6)


def test_flax_conv_with_the_fast_path_has_the_same_parameters_and_outputs(path):
    x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 8, 8, 3)), jnp.float32)
    native, fast = nn.Conv(4, (3, 3)), nn.Conv(4, (3, 3), conv_general_dilated=conv_general_dilated)
    params = native.init(jax.random.PRNGKey(0), x)
    np.testing.assert_allclose(fast.apply(params, x), native.apply(params, x), rtol=1e-5, atol=1e-6)


def test_max_pool_by_reshape_equals_flax_max_pool_values_and_gradients():
    x = jnp.asarray(np.random.default_rng(2).normal(size=(3, 9, 8, 5)), jnp.float32)  # odd height: remainder dropped
    pool = lambda x, fast: jnp.sum(jnp.cos(max_pool(x, (2, 2), fast=fast)))  # noqa: E731
    np.testing.assert_allclose(max_pool(x, (2, 2)), nn.max_pool(x, (2, 2), strides=(2, 2)))
    np.testing.assert_allclose(jax.grad(pool)(x, True), jax.grad(pool)(x, False), rtol=1e-6)


def _tied(shape, seed):
    """Small integers: most windows hold their maximum more than once; many values are <= 0."""
    return jnp.asarray(np.random.default_rng(seed).integers(-2, 3, shape), jnp.float32)


@pytest.mark.parametrize("window", [(2, 2), (3, 2)])
def test_with_ties_the_gradient_goes_where_xlas_select_and_scatter_sends_it(window):
    x = _tied((2, 9, 8, 3), seed=4)  # 9 rows: a remainder for both windows
    g = jnp.asarray(np.random.default_rng(5).normal(size=max_pool(x, window).shape), jnp.float32)
    fast, native = (jax.vjp(lambda x: max_pool(x, window, fast=f), x)[1](g)[0] for f in (True, False))
    np.testing.assert_array_equal(fast, native)


def test_relu_max_pool_equals_max_pool_of_relu_with_ties_in_values_and_gradients():
    y, bias = _tied((3, 8, 10, 4), seed=6), jnp.asarray([0.0, 1.0, -1.0, 0.5], jnp.float32)
    g = jnp.asarray(np.random.default_rng(7).normal(size=(3, 4, 5, 4)), jnp.float32)
    out, vjp = jax.vjp(lambda y, b: relu_max_pool(y, b, (2, 2)), y, bias)
    ref_out, ref_vjp = jax.vjp(lambda y, b: nn.max_pool(nn.relu(y + b), (2, 2), strides=(2, 2)), y, bias)
    np.testing.assert_array_equal(out, ref_out)
    chex.assert_trees_all_close(vjp(g), ref_vjp(g), rtol=1e-6, atol=1e-6)


def test_pooling_keeps_an_int8_window_index_not_its_float_input_for_the_gradient():
    y = jnp.zeros((2, 8, 8, 4), jnp.float32)
    for pool in (lambda y: max_pool(y, (2, 2)), lambda y: relu_max_pool(y, jnp.zeros(4), (2, 2))):
        residuals = [r for r in jax.tree_util.tree_leaves(jax.vjp(pool, y)[1]) if r.shape == (2, 4, 4, 4)]
        assert [r.dtype for r in residuals] == [jnp.int8]


@pytest.mark.parametrize("trunk", [SeedCNN, lambda conv: ResNet((1, 1), (8, 16), conv=conv)], ids=["seed", "resnet"])
def test_trunks_give_the_same_outputs_and_gradients_on_both_paths(trunk):
    x = jnp.asarray(np.random.default_rng(3).integers(0, 255, (2, 16, 16, 3)), jnp.uint8)
    fast, native = (trunk(conv="fast") if trunk is SeedCNN else trunk("fast"),
                    trunk(conv="native") if trunk is SeedCNN else trunk("native"))
    params = init_variables(native, jax.random.PRNGKey(0), x)
    chex.assert_trees_all_equal_shapes(jax.eval_shape(fast.init, jax.random.PRNGKey(0), x), params)
    loss = lambda model, p: jnp.sum(model.apply(p, x) ** 2)  # noqa: E731
    np.testing.assert_allclose(jit_once(fast.apply)(params, x), jit_once(native.apply)(params, x), rtol=1e-4, atol=1e-5)
    chex.assert_trees_all_close(jit_once(jax.grad(lambda p: loss(fast, p)))(params),
                                jit_once(jax.grad(lambda p: loss(native, p)))(params), rtol=1e-3, atol=1e-4)


def test_the_cpu_choice_uses_gemm_only_for_narrow_patches():
    x, w = _pair((2, 8, 8, 3), (3, 3, 3, 4))
    lowered = jax.jit(lambda x, w: conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=DN)).lower(x, w)
    assert "convolution" not in lowered.as_text()  # 27-wide patches: one dot
    x, w = _pair((2, 8, 8, 32), (3, 3, 32, 4))
    lowered = jax.jit(lambda x, w: conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=DN)).lower(x, w)
    assert "convolution" in lowered.as_text()


def test_the_platform_choice():
    cpu = jax.default_backend() == "cpu"
    assert conv_for_platform("native") is None and not fast_pooling("native")
    assert conv_for_platform("fast") is conv_general_dilated and fast_pooling("fast")
    single_threaded = cpu and not mtl_cpu.fast_convolutions_enabled()
    assert conv_for_platform("auto") is (conv_general_dilated if single_threaded else None)
    assert fast_pooling("auto") is cpu
    with pytest.raises(ValueError, match="conv must be one of"):
        conv_for_platform("cudnn")


def test_the_chunked_filter_gradient_pads_a_batch_the_chunk_does_not_divide(monkeypatch):
    x, w = _pair((5, 6, 6, 8), (3, 3, 8, 4))
    dy = jnp.asarray(np.random.default_rng(4).normal(size=(5, 3, 3, 4)), jnp.float32)
    pads = ((1, 1), (1, 1))
    # two images a chunk: three steps, the last one padded with a zero image
    monkeypatch.setattr(conv_module, "FILTER_GRAD_CHUNK_BYTES", 2 * 3 * 3 * 8 * 4)
    filter_gradient = jit_once(lambda x, w, dy: jax.vjp(lambda w_: conv_general_dilated(
        x, w_, (2, 2), pads, dimension_numbers=DN), w)[1](dy)[0])
    reference = jax.vjp(lambda w_: lax.conv_general_dilated(x, w_, (2, 2), pads, dimension_numbers=DN), w)[1](dy)[0]
    np.testing.assert_allclose(filter_gradient(x, w, dy), reference, rtol=1e-5, atol=1e-5)
    assert "while" in filter_gradient.lower(x, w, dy).as_text()


def test_the_wide_path_replaces_xlas_filter_gradient_convolution():
    x, w = _pair((2, 8, 8, 32), (3, 3, 32, 4))
    grad_w = jit_once(jax.grad(lambda w: jnp.sum(conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=DN) ** 2)))
    native = jit_once(jax.grad(lambda w: jnp.sum(lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=DN) ** 2)))
    count = lambda f: f.lower(w).compile().as_text().count(" convolution(")  # noqa: E731
    assert count(native) == 2 and count(grad_w) == 1  # only the forward convolution is left
    np.testing.assert_allclose(grad_w(w), native(w), rtol=1e-4, atol=1e-4)
