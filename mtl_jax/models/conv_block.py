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

The layer is a ``jax.custom_jvp`` (so forward mode and Hessian-vector products work): its
tangent ``d out = (P_i dW + conv(dx, W) + db)`` at each window's first maximum ``i`` is written,
chunk by chunk, in linear operations whose transpose, derived by reverse mode, is the backward
pass above (:func:`_kernel_tangent`).

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
from mtl_jax.models.conv import conv_for_platform, fast_pooling, max_pool, relu_max_pool, scan_window_max_and_index

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


@functools.partial(jax.custom_jvp, nondiff_argnums=(3, 4, 5))
def _conv_relu_pool(x, kernel, bias, strides, pads, window):
    return _pooled_and_index(x, kernel, bias, strides, pads, window)[0]


def _pooled_and_index(x, kernel, bias, strides, pads, window):
    kh, kw, cin, cout = kernel.shape
    _, pooled_hw, (steps, chunk) = _shapes(x, kernel, strides, pads, window)

    def layer(_, x_chunk):
        patches = window_patches(x_chunk, (kh, kw), strides, pads, window, pooled_hw)
        z = (patches.reshape(-1, kh * kw * cin) @ conv_module._patch_kernel(kernel)).reshape(
            *patches.shape[:-1], cout) + bias
        return None, scan_window_max_and_index(list(z), relu=True)

    pooled, index = lax.scan(layer, None, conv_module.in_chunks(x, steps, chunk))[1]
    pooled = pooled.reshape(steps * chunk, *pooled.shape[2:])[: x.shape[0]]
    return pooled, index


def _kernel_tangent(x, index, t_kernel, strides, pads, window):
    """``dz_i`` at each window's first maximum ``i`` for ``dz_j = P_j dW``, chunk by chunk, each
    chunk's patches recomputed from the chunk (``jax.checkpoint``), never kept.

    Linear in ``dW``; reverse mode derives its transpose, the filter gradient: per chunk
    ``dz_j = g where i == j`` and ``dW += sum_j P_j^T dz_j``, one GEMM over the recomputed patches.
    """
    kh, kw, cin, cout = t_kernel.shape
    _, pooled_hw, (steps, chunk) = _shapes(x, t_kernel, strides, pads, window)
    positions = jnp.arange(window[0] * window[1], dtype=jnp.int8).reshape(-1, 1, 1, 1, 1)
    t_matrix = conv_module._patch_kernel(t_kernel)

    @functools.partial(jax.checkpoint, prevent_cse=False)
    def chunk_tangent(x_chunk, index_chunk):
        patches = window_patches(x_chunk, (kh, kw), strides, pads, window, pooled_hw)
        dz = (patches.reshape(-1, kh * kw * cin) @ t_matrix).reshape(*patches.shape[:-1], cout)
        return jnp.where(index_chunk[None] == positions, dz, 0).sum(axis=0)

    tangent = lax.scan(lambda _, arrays: (None, chunk_tangent(*arrays)), None,
                       (conv_module.in_chunks(x, steps, chunk), index))[1]
    return tangent.reshape(steps * chunk, *tangent.shape[2:])[: x.shape[0]]


def _conv_relu_pool_jvp(strides, pads, window, primals, tangents):
    """``d out = pick(i, conv(dx, W) + conv(x, dW) + db)`` at each window's first maximum ``i``:
    :func:`_kernel_tangent` for ``dW``, XLA's convolution for ``dx`` (reverse mode: XLA's
    transposed convolution, skipped for the image input, whose tangent is zero), and the bias
    through :func:`conv.pick`. The backward pass keeps only ``x`` and the int8 ``i``."""
    (x, kernel, bias), (t_x, t_kernel, t_bias) = primals, tangents
    pooled, index = _pooled_and_index(x, kernel, bias, strides, pads, window)
    flat_index = index.reshape(-1, *index.shape[2:])[: x.shape[0]]
    terms = []
    if not conv_module._is_zero(t_kernel):
        terms.append(_kernel_tangent(x, index, t_kernel, strides, pads, window))
    through_input = None if conv_module._is_zero(t_x) else conv_module._crop(
        conv_module._native(t_x, kernel, strides, pads, (1, 1)), window)
    through_bias = None if conv_module._is_zero(t_bias) else t_bias
    if through_input is not None or through_bias is not None:
        terms.append(conv_module.pick(flat_index, through_input, window, through_bias))
    return pooled, conv_module._sum_or_zeros(pooled, *terms)


_conv_relu_pool.defjvp(_conv_relu_pool_jvp, symbolic_zeros=True)


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
