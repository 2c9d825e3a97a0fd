"""The fused conv + bias + ReLU + max-pool layer gives the unfused layer's values and gradients."""
import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from mtl_jax import cpu
from mtl_jax.models import conv as conv_module
from mtl_jax.models import conv_block
from mtl_jax.models.conv_block import ConvReLUPool, conv_relu_pool

DN = ("NHWC", "HWIO", "NHWC")


def _layer(shape_x, shape_w, seed=0):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=shape_x), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=shape_w) / np.sqrt(np.prod(shape_w[:3])), jnp.float32)
    bias = jnp.asarray(rng.normal(size=shape_w[-1:]) * 0.1, jnp.float32)
    return x, kernel, bias


def _reference(x, kernel, bias, window, strides, padding):
    y = lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=DN) + bias
    return nn.max_pool(nn.relu(y), window, strides=window)


CASES = [  # (x, kernel, window, strides, padding)
    ((4, 16, 16, 3), (3, 3, 3, 8), (2, 2), (1, 1), "SAME"),   # the seed CNN's stem
    ((3, 9, 11, 3), (3, 3, 3, 5), (2, 2), (1, 1), "SAME"),    # odd sizes: the remainder is dropped
    ((2, 12, 12, 2), (5, 5, 2, 4), (3, 2), (1, 1), "VALID"),  # another kernel, window and padding
    ((3, 13, 13, 3), (3, 3, 3, 6), (2, 2), (2, 2), "SAME"),   # strided convolution
]


@pytest.mark.parametrize("chunk_bytes", [4 << 20, 1], ids=["one-chunk", "image-per-chunk"])
@pytest.mark.parametrize("shape_x,shape_w,window,strides,padding", CASES)
def test_values_and_gradients_equal_the_unfused_layer(monkeypatch, chunk_bytes, shape_x, shape_w, window, strides,
                                                      padding):
    monkeypatch.setattr(conv_block, "CHUNK_BYTES", chunk_bytes)
    x, kernel, bias = _layer(shape_x, shape_w)

    def loss(layer, x, kernel, bias):
        out = layer(x, kernel, bias, window, strides, padding)
        return jnp.sum(jnp.sin(3.0 * out)), out

    (_, out), grads = jax.value_and_grad(loss, (1, 2, 3), has_aux=True)(conv_relu_pool, x, kernel, bias)
    (_, ref_out), ref_grads = jax.value_and_grad(loss, (1, 2, 3), has_aux=True)(_reference, x, kernel, bias)
    chex.assert_trees_all_close(out, ref_out, rtol=1e-5, atol=1e-5)
    chex.assert_trees_all_close(grads, ref_grads, rtol=1e-4, atol=1e-4)


def test_a_batch_the_chunk_does_not_divide_is_padded_and_cropped(monkeypatch):
    x, kernel, bias = _layer((5, 8, 8, 3), (3, 3, 3, 4))
    monkeypatch.setattr(conv_block, "CHUNK_BYTES", 2 * 8 * 8 * 4 * 4)  # two images a chunk: 3 chunks, one padded
    value_and_grad = jax.value_and_grad(lambda layer, k: jnp.sum(layer(x, k, bias, (2, 2), (1, 1), "SAME") ** 2), 1)
    value, grad = value_and_grad(conv_relu_pool, kernel)
    ref_value, ref_grad = value_and_grad(_reference, kernel)
    np.testing.assert_allclose(value, ref_value, rtol=1e-5)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("bias", [0.5, 0.0], ids=["all-tied-positive", "all-zero-after-relu"])
def test_tied_windows_send_the_gradient_where_xla_does(bias):
    """A zero kernel makes every conv output equal the bias: every window is a four-way tie."""
    x, kernel, _ = _layer((2, 8, 8, 3), (3, 3, 3, 4))
    kernel, bias = jnp.zeros_like(kernel), jnp.full((4,), bias, jnp.float32)
    g = jnp.asarray(np.random.default_rng(8).normal(size=(2, 4, 4, 4)), jnp.float32)
    fused = jax.vjp(lambda *a: conv_relu_pool(*a), x, kernel, bias)[1](g)
    reference = jax.vjp(lambda *a: _reference(*a, (2, 2), (1, 1), "SAME"), x, kernel, bias)[1](g)
    chex.assert_trees_all_close(fused, reference, rtol=1e-5, atol=1e-5)


def test_window_patches_are_the_im2col_patches_of_each_window_position():
    x, kernel, _ = _layer((2, 9, 7, 3), (3, 3, 3, 4))
    pads = ((1, 1), (1, 1))
    full = conv_module._patches(x, (3, 3), (1, 1), pads, (1, 1), (9, 7))
    by_window = conv_block.window_patches(x, (3, 3), (1, 1), pads, (2, 2), (4, 3))
    chex.assert_shape(by_window, (4, 2, 4, 3, 27))
    for position, (a, b) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        np.testing.assert_array_equal(by_window[position], full[:, a:8:2, b:6:2])


def test_the_layer_keeps_nn_convs_parameters_on_every_path():
    x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 8, 8, 3)), jnp.float32)
    conv_params = nn.Conv(4, (3, 3)).init(jax.random.PRNGKey(0), x)
    for path in ("fast", "native"):
        layer = ConvReLUPool(4, conv=path)
        params = layer.init(jax.random.PRNGKey(0), x)
        chex.assert_trees_all_equal(params, conv_params)
        reference = nn.max_pool(nn.relu(nn.Conv(4, (3, 3)).apply(conv_params, x)), (2, 2), strides=(2, 2))
        np.testing.assert_allclose(layer.apply(params, x), reference, rtol=1e-5, atol=1e-6)


def test_auto_fuses_the_stem_only_with_mtl_jaxs_convolutions():
    """Next to XLA's multi-threaded convolutions the unfused stem made the whole step faster."""
    x = jnp.zeros((2, 8, 8, 3))
    params = ConvReLUPool(4).init(jax.random.PRNGKey(0), x)
    text = jax.jit(lambda p: ConvReLUPool(4, conv="auto").apply(p, x)).lower(params).as_text()
    assert ("while" in text) == (not cpu.fast_convolutions_enabled())
    assert ("convolution" in text) == cpu.fast_convolutions_enabled()


def test_the_fast_path_fuses_narrow_layers_only():
    x = jnp.zeros((2, 8, 8, 3))
    fused = jax.jit(lambda p: ConvReLUPool(4, conv="fast").apply(p, x))
    params = ConvReLUPool(4).init(jax.random.PRNGKey(0), x)
    assert "while" in fused.lower(params).as_text()  # the chunked scan
    wide = jnp.zeros((2, 8, 8, 32))
    params = ConvReLUPool(4).init(jax.random.PRNGKey(0), wide)
    assert "while" not in jax.jit(lambda p: ConvReLUPool(4, conv="fast").apply(p, wide)).lower(params).as_text()
    with pytest.raises(ValueError, match="kh\\*kw\\*C_in"):
        conv_relu_pool(wide, params["params"]["kernel"], params["params"]["bias"])
