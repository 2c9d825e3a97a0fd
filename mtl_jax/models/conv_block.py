"""Convolution + bias + ReLU + max pooling as one CPU-fast layer (the seed CNN's layer).

``ConvReLUPool`` computes ``max_pool(relu(conv(x, W) + b), window)`` with the parameters of
``nn.Conv`` (``kernel``, ``bias``; same initialisers and shapes), so it drops into a trunk in
place of ``nn.Conv -> relu -> max_pool`` without changing a checkpoint.

For narrow patches (``kh*kw*C_in <= conv.GEMM_MAX_PATCH``, e.g. the RGB stem) on the fast
path, :func:`conv_relu_pool` runs the whole layer over chunks of images in a ``lax.scan``::

    forward, per chunk:   P = im2col(x_c);  z = relu(P W + b);  out_c = max over each window of z
    backward, per chunk:  recompute P and z;  dz = g_c at the window's maximum where z > 0;
                          dW += P^T dz;  db += sum dz;  dx_c = conv^T(dz)

The full-resolution activation ``z`` (``B x H x W x C_out``: 33 MB for the seed CNN's first
layer) then never leaves the cache: on a CPU its round trips through memory cost more than
the layer's arithmetic. Ties in a window share its gradient, as in :func:`conv.max_pool`.
It is used on CPU (``conv="auto"`` there, or ``"fast"``) whatever the convolution path: it beats
XLA's multi-threaded convolution + mtl_jax's ``max_pool`` too (~38 -> ~25 ms forward and backward
for the seed CNN's stem; measured in ``benchmarks/conv_speed.py``). Wider layers, the native
path and other forms run the three operations one after another.
"""
from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from mtl_jax.models import conv as conv_module
from mtl_jax.models.conv import conv_for_platform, fast_pooling, max_pool

# Images per chunk: as many as keep a chunk's full-resolution activation under this size.
CHUNK_BYTES = 4 << 20


def _activation(x_chunk, kernel, bias, strides, pads, out_hw):
    kh, kw, cin, cout = kernel.shape
    patches = conv_module._patches(x_chunk, (kh, kw), strides, pads, (1, 1), out_hw).reshape(-1, kh * kw * cin)
    z = jax.nn.relu((patches @ conv_module._patch_kernel(kernel)).reshape(x_chunk.shape[0], *out_hw, cout) + bias)
    return patches, z


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _conv_relu_pool(x, kernel, bias, strides, pads, window):
    return _conv_relu_pool_fwd(x, kernel, bias, strides, pads, window)[0]


def _out_hw(x, kernel, strides, pads):
    return jax.eval_shape(lambda: conv_module._native(x, kernel, strides, pads, (1, 1))).shape[1:3]


def _conv_relu_pool_fwd(x, kernel, bias, strides, pads, window):
    out_hw = _out_hw(x, kernel, strides, pads)
    steps, chunk = conv_module.chunking(x.shape[0], out_hw[0] * out_hw[1] * kernel.shape[-1] * 4, CHUNK_BYTES)

    def layer(_, x_chunk):
        return None, max_pool(_activation(x_chunk, kernel, bias, strides, pads, out_hw)[1], window)

    pooled = lax.scan(layer, None, conv_module.in_chunks(x, steps, chunk))[1]
    pooled = pooled.reshape(steps * chunk, *pooled.shape[2:])[: x.shape[0]]
    return pooled, (x, kernel, bias, pooled)


def _conv_relu_pool_bwd(strides, pads, window, residuals, g):
    x, kernel, bias, pooled = residuals
    kh, kw, cin, cout = kernel.shape
    out_hw = _out_hw(x, kernel, strides, pads)
    steps, chunk = conv_module.chunking(x.shape[0], out_hw[0] * out_hw[1] * cout * 4, CHUNK_BYTES)

    def layer_gradient(totals, chunk_arrays):
        x_chunk, pooled_chunk, g_chunk = chunk_arrays
        patches, z = _activation(x_chunk, kernel, bias, strides, pads, out_hw)
        h, w = pooled_chunk.shape[1] * window[0], pooled_chunk.shape[2] * window[1]  # a remainder is dropped
        dz = conv_module.window_gradient(z[:, :h, :w], pooled_chunk, g_chunk, window, keep=z[:, :h, :w] > 0)
        dz = jnp.pad(dz, ((0, 0), (0, z.shape[1] - h), (0, z.shape[2] - w), (0, 0)))
        rows = dz.reshape(-1, cout)
        d_kernel = lax.dot_general(patches, rows, (((0,), (0,)), ((), ())))
        dx_chunk = conv_module._input_gradient(x_chunk, kernel, strides, pads, (1, 1), dz)
        return (totals[0] + d_kernel, totals[1] + rows.sum(axis=0)), dx_chunk

    zeros = (jnp.zeros((kh * kw * cin, cout), jnp.float32), jnp.zeros((cout,), jnp.float32))
    (d_kernel, d_bias), dx = lax.scan(layer_gradient, zeros, tuple(
        conv_module.in_chunks(a, steps, chunk) for a in (x, pooled, g)))
    d_kernel = jnp.transpose(d_kernel.reshape(kw, kh, cin, cout), (1, 0, 2, 3))
    dx = dx.reshape(steps * chunk, *x.shape[1:])[: x.shape[0]]
    return dx.astype(x.dtype), d_kernel.astype(kernel.dtype), d_bias.astype(bias.dtype)


_conv_relu_pool.defvjp(_conv_relu_pool_fwd, _conv_relu_pool_bwd)


def fusable(x, kernel) -> bool:
    """Whether :func:`conv_relu_pool` fuses this layer: float32 NHWC input, narrow patches."""
    kh, kw, cin, _ = kernel.shape
    return x.ndim == 4 and x.dtype == jnp.float32 and kh * kw * cin <= conv_module.GEMM_MAX_PATCH


def conv_relu_pool(x, kernel, bias, window=(2, 2), strides=(1, 1), padding="SAME"):
    """``max_pool(relu(conv(x, kernel) + bias), window)``, chunked and fused (see the module docstring).

    ``x`` is NHWC, ``kernel`` HWIO; pooling windows do not overlap (stride = window).
    """
    if not fusable(x, kernel):
        raise ValueError(f"conv_relu_pool fuses float32 NHWC layers with kh*kw*C_in <= "
                         f"{conv_module.GEMM_MAX_PATCH}; got x {x.dtype} {x.shape}, kernel {kernel.shape}")
    strides = tuple(int(s) for s in strides)
    pads = conv_module._explicit_padding(padding, x.shape[1:3], kernel.shape[:2], strides, (1, 1))
    return _conv_relu_pool(x, kernel, bias, strides, pads, tuple(window))


class ConvReLUPool(nn.Module):
    """``nn.Conv(features, kernel_size, padding="SAME") -> ReLU -> max_pool(window)`` with ``nn.Conv``'s
    parameters; ``conv`` picks the path as in the trunks (``"auto" | "fast" | "native"``)."""

    features: int
    kernel_size: tuple[int, int] = (3, 3)
    window: tuple[int, int] = (2, 2)
    conv: str = "auto"

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", nn.initializers.lecun_normal(),
                            (*self.kernel_size, x.shape[-1], self.features), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32)
        if fast_pooling(self.conv) and fusable(x, kernel):  # "auto" on CPU, or "fast"
            return conv_relu_pool(x, kernel, bias, self.window)
        conv_fn = conv_for_platform(self.conv)
        y = (conv_fn or lax.conv_general_dilated)(x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        y = y + bias
        return max_pool(nn.relu(y), self.window, fast=fast_pooling(self.conv))
