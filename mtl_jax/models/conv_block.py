"""Convolution + bias + ReLU + max pooling as one CPU-fast layer (the seed CNN's layer).

``ConvReLUPool`` computes ``max_pool(relu(conv(x, W) + b), window)`` with the parameters of
``nn.Conv`` (``kernel``, ``bias``; same initialisers and shapes), so it drops into a trunk in
place of ``nn.Conv -> relu -> max_pool`` without changing a checkpoint.

For narrow patches (``kh*kw*C_in <= conv.GEMM_MAX_PATCH``, e.g. the RGB stem) on the fast
path, :func:`conv_relu_pool` runs the whole layer over chunks of images in a ``lax.scan``, with
the im2col patches in window-major order (:func:`window_patches`: ``P_j`` holds the patches of
window position ``j``'s conv output pixels, so pooling is an elementwise maximum over ``j``)::

    forward, per chunk:   z_j = P_j W + b;  out = max_j relu(z_j);  i = first j attaining it (int8)
    backward, per chunk:  recompute P;  dz_j = g where i == j;  dW += sum_j P_j^T dz_j  (one GEMM)
    after the scan:       db = sum of g where the window's maximum is positive

The full-resolution activation ``z`` (``B x H x W x C_out``: 33 MB for the seed CNN's first
layer) never leaves the cache: on a CPU its round trips through memory cost more than the
layer's arithmetic. The backward pass needs no forward GEMM (only the int8 index), conv
outputs in a pooling remainder are never computed, and the gradient goes to the window's
first maximum, as XLA's ``select_and_scatter`` sends it (see :func:`conv.window_max_and_index`).
It is used wherever the layer runs mtl_jax's convolutions (``conv="fast"``, or ``"auto"`` on a
CPU whose XLA convolutions are single-threaded): there it beats mtl_jax's im2col convolution +
:func:`conv.relu_max_pool` (the seed CNN step ~5% faster). Next to XLA's multi-threaded
convolutions it loses: XLA's convolution + :func:`conv.relu_max_pool` made the whole step ~12%
faster (measured in one process, both orders), although on its own the fused layer is the faster
one (~20 against ~35 ms forward and backward; inside the step XLA can run other work alongside
the unfused layer's operations, not alongside the chunk loop, the likely reason). Wider layers run
the convolution and then :func:`conv.relu_max_pool`; the native path runs the three operations
one after another.
"""
from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from mtl_jax.models import conv as conv_module
from mtl_jax.models.conv import conv_for_platform, fast_pooling, max_pool, relu_max_pool, window_max_and_index

# Images per chunk: as many as keep a chunk's full-resolution activation under this size
# (8 MiB measured fastest for the seed CNN's stem in benchmarks/conv_speed.py: 4 and 16 MiB lose).
CHUNK_BYTES = 8 << 20


def window_patches(x, kernel_hw, strides, pads, window, pooled_hw):
    """``[wy*wx, B, Hp, Wp, kw*kh*C]``: for window position ``(a, b)`` (row-major), the im2col patch
    of conv output pixel ``(wy*y + a, wx*x + b)`` at every pooled pixel ``(y, x)``.

    Conv output row ``wy*y + a`` reads input rows ``sy*(wy*y + a) + ky``: strided slices of step
    ``sy*wy``, two passes as in :func:`conv._patches`. Output pixels in a pooling remainder are
    never computed. Pair with :func:`conv._patch_kernel`.
    """
    (kh, kw), (sy, sx), (wy, wx), (hp, wp) = kernel_hw, strides, window, pooled_hw
    x = conv_module._pad(x, pads)
    per_position = []
    for a in range(wy):
        rows = conv_module.row_taps(x, kh, sy * a, sy * wy, hp)
        per_position += [conv_module.column_taps(rows, kw, sx * b, sx * wx, wp) for b in range(wx)]
    return jnp.stack(per_position)


def _shapes(x, kernel, strides, pads, window):
    out_hw = jax.eval_shape(lambda: conv_module._native(x, kernel, strides, pads, (1, 1))).shape[1:3]
    pooled_hw = (out_hw[0] // window[0], out_hw[1] // window[1])
    chunks = conv_module.chunking(x.shape[0], out_hw[0] * out_hw[1] * kernel.shape[-1] * 4, CHUNK_BYTES)
    return out_hw, pooled_hw, chunks


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _conv_relu_pool(x, kernel, bias, strides, pads, window):
    return _conv_relu_pool_fwd(x, kernel, bias, strides, pads, window)[0]


def _conv_relu_pool_fwd(x, kernel, bias, strides, pads, window):
    kh, kw, cin, cout = kernel.shape
    _, pooled_hw, (steps, chunk) = _shapes(x, kernel, strides, pads, window)

    def layer(_, x_chunk):
        patches = window_patches(x_chunk, (kh, kw), strides, pads, window, pooled_hw)
        z = (patches.reshape(-1, kh * kw * cin) @ conv_module._patch_kernel(kernel)).reshape(
            *patches.shape[:-1], cout) + bias
        return None, window_max_and_index(list(z), relu=True)

    pooled, index = lax.scan(layer, None, conv_module.in_chunks(x, steps, chunk))[1]
    pooled = pooled.reshape(steps * chunk, *pooled.shape[2:])[: x.shape[0]]
    return pooled, (x, kernel, bias, index)


def _conv_relu_pool_bwd(strides, pads, window, residuals, g):
    x, kernel, bias, index = residuals
    kh, kw, cin, cout = kernel.shape
    out_hw, pooled_hw, (steps, chunk) = _shapes(x, kernel, strides, pads, window)
    positions = jnp.arange(window[0] * window[1], dtype=jnp.int8).reshape(-1, 1, 1, 1, 1)
    g = conv_module.in_chunks(g, steps, chunk)

    def layer_gradient(d_kernel, chunk_arrays):
        x_chunk, g_chunk, index_chunk = chunk_arrays
        patches = window_patches(x_chunk, (kh, kw), strides, pads, window, pooled_hw)
        dz = jnp.where(index_chunk[None] == positions, g_chunk[None], 0.0)  # window-major, like the patches
        d_kernel += lax.dot_general(patches.reshape(-1, kh * kw * cin), dz.reshape(-1, cout), (((0,), (0,)), ((), ())))
        dz_image = conv_module.spread(index_chunk, g_chunk, window)  # dropped by XLA unless dx is used
        dz_image = jnp.pad(dz_image, ((0, 0), (0, out_hw[0] - dz_image.shape[1]), (0, out_hw[1] - dz_image.shape[2]),
                                      (0, 0)))
        return d_kernel, conv_module._input_gradient(x_chunk, kernel, strides, pads, (1, 1), dz_image)

    d_kernel, dx = lax.scan(layer_gradient, jnp.zeros((kh * kw * cin, cout), jnp.float32),
                            (conv_module.in_chunks(x, steps, chunk), g, index))
    d_kernel = jnp.transpose(d_kernel.reshape(kw, kh, cin, cout), (1, 0, 2, 3))
    d_bias = conv_module.pooled_bias_gradient(index, g, window)
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
        conv_fn = conv_for_platform(self.conv)
        if conv_fn is not None and fusable(x, kernel):  # mtl_jax's convolutions: fuse the narrow layer
            return conv_relu_pool(x, kernel, bias, self.window)
        y = (conv_fn or lax.conv_general_dilated)(x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        if fast_pooling(self.conv):
            return relu_max_pool(y, bias, self.window)
        return max_pool(nn.relu(y + bias), self.window, fast=False)
