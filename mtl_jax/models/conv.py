"""Convolution and pooling that are fast on CPU, with the values of XLA's own.

On CPU, XLA is slow at three things a small CNN spends most of its step on: max pooling's
gradient (``select_and_scatter``: ~60-130 ms a layer in the seed CNN step) and, with the
one-thread YNNPACK convolutions jaxlib 0.10 uses by default, the filter gradient of a
convolution (91 ms for the seed CNN's 32 -> 64 layer, ~4x its forward) and convolutions with
few input channels (the RGB stem). This module provides

* :func:`max_pool`: non-overlapping windows pooled as the elementwise maximum of the
  window's strided slices (one pass, fused with the ReLU before it), with a custom VJP that
  routes each window's gradient to the positions equal to its maximum in one fused
  elementwise pass (ties share it; after a ReLU, tied zeros receive none anyway);
* :func:`conv_general_dilated`: the signature and values of ``lax.conv_general_dilated``;
  for NHWC inputs and HWIO kernels it computes, through a ``jax.custom_vjp``:

  - narrow patches (``kh*kw*C_in <= GEMM_MAX_PATCH``, e.g. the RGB stem), with the im2col
    patch matrix ``P`` (one row of ``kh*kw*C_in`` values per output pixel)::

        forward:          y  = P W          (one GEMM; W reshaped to [kh*kw*C_in, C_out])
        filter gradient:  dW = P^T dy       (one GEMM over the saved patches)

  - wider ones: XLA's forward convolution and, for the filter gradient, one
    ``[C_in, C_out]`` GEMM per kernel tap over chunks of images (:func:`_filter_gradient_by_taps`)::

        dW[ky, kx] = sum_b sum_{y, x} x_pad[b, s*y + d*ky, s*x + d*kx]^T dy[b, y, x]

  - both: the input gradient is XLA's transposed convolution (forward-shaped, which XLA
    CPU does well).

  Grouped, input-dilated or other-layout convolutions are XLA's own.

:func:`conv_for_platform` picks the convolution for ``conv="auto" | "fast" | "native"`` and
:func:`fast_pooling` the pooling: on CPU, ``"auto"`` pools with :func:`max_pool` and keeps
XLA's convolution when :mod:`mtl_jax.cpu_flags` made XLA's CPU convolutions multi-threaded
(then they beat this module's), this module's otherwise; GPU and TPU keep XLA's layers.
Measured step times and ratios are in ``benchmarks/README.md``.
"""
from __future__ import annotations

import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from mtl_jax import cpu_flags

NHWC = lax.conv_dimension_numbers((1, 1, 1, 1), (1, 1, 1, 1), ("NHWC", "HWIO", "NHWC"))
CONV_CHOICES = ("auto", "fast", "native")


def _explicit_padding(padding, in_shape, kernel_shape, strides, dilation):
    if isinstance(padding, str):
        effective = [(k - 1) * d + 1 for k, d in zip(kernel_shape, dilation)]
        return tuple(lax.padtype_to_pads(in_shape, effective, strides, padding))
    return tuple((int(lo), int(hi)) for lo, hi in padding)


def _tap(x_padded, ky, kx, strides, dilation, out_hw):
    """The input pixels kernel tap ``(ky, kx)`` reads for every output pixel: ``[B, Ho, Wo, C]``."""
    start = (0, ky * dilation[0], kx * dilation[1], 0)
    limit = (x_padded.shape[0], start[1] + (out_hw[0] - 1) * strides[0] + 1,
             start[2] + (out_hw[1] - 1) * strides[1] + 1, x_padded.shape[3])
    return lax.slice(x_padded, start, limit, (1, strides[0], strides[1], 1))


def _pad(x, pads):
    return jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))


def _patches(x, kernel_hw, strides, pads, dilation, out_hw):
    """``[B, Ho, Wo, kw*kh*C]``: the input window of every output pixel, ordered (kx, ky, c).

    Built in two passes, the ``kh`` row shifts concatenated along channels and then the ``kw``
    column shifts of that: XLA CPU copies a few wide operands far faster than ``kh*kw`` narrow
    ones (3 ms against 16 ms for the seed CNN's RGB stem). Pair with :func:`_patch_kernel`.
    """
    x = _pad(x, pads)
    (kh, kw), (sy, sx), (dy, dx), (out_h, out_w) = kernel_hw, strides, dilation, out_hw
    rows = jnp.concatenate([lax.slice_in_dim(x, ky * dy, ky * dy + (out_h - 1) * sy + 1, sy, axis=1)
                            for ky in range(kh)], axis=-1)
    columns = [lax.slice_in_dim(rows, kx * dx, kx * dx + (out_w - 1) * sx + 1, sx, axis=2) for kx in range(kw)]
    return jnp.stack(columns, axis=-2).reshape(*rows.shape[:2], out_w, kw * rows.shape[-1])


def _patch_kernel(w):
    """The HWIO kernel as the ``[kw*kh*C_in, C_out]`` matrix that multiplies :func:`_patches`."""
    kh, kw, cin, cout = w.shape
    return jnp.transpose(w, (1, 0, 2, 3)).reshape(kw * kh * cin, cout)


def chunking(batch: int, per_image_bytes: int, budget_bytes: int) -> tuple[int, int]:
    """``(steps, chunk)`` for a ``lax.scan`` over chunks of images of at most ``budget_bytes``
    each, with as few padding images (``steps * chunk - batch``) as that number of steps allows."""
    chunk = max(1, min(batch, budget_bytes // per_image_bytes))
    steps = -(-batch // chunk)
    return steps, -(-batch // steps)


def in_chunks(a, steps: int, chunk: int):
    """``a`` as ``[steps, chunk, ...]``, padded with zero images at the end where needed."""
    extra = steps * chunk - a.shape[0]
    if extra:
        a = jnp.pad(a, ((0, extra),) + ((0, 0),) * (a.ndim - 1))
    return a.reshape(steps, chunk, *a.shape[1:])


# Images per step of the chunked filter gradient: chunks this size keep each tap's slice of the
# input (chunk x Ho x Wo x C_in floats) in the core's cache for its GEMM (benchmarks/conv_speed.py).
FILTER_GRAD_CHUNK_BYTES = 1 << 20


def _filter_gradient_by_taps(x, dy, kernel_shape, strides, pads, dilation):
    """``dW[ky, kx] = sum_{b, y, x} x_pad[b, s*y + d*ky, s*x + d*kx]^T dy[b, y, x]``.

    One ``[C_in, C_out]`` GEMM per kernel tap over a chunk of images, summed over chunks in a
    ``lax.scan``: every operand stays small enough to sit in cache, unlike the ``kh*kw``-times
    larger patch matrix or XLA CPU's filter-gradient convolution. Batches that the chunk does not
    divide are padded with zero images, which add nothing to the sum.
    """
    kh, kw, cin, cout = kernel_shape
    batch, out_h, out_w, _ = dy.shape
    steps, chunk = chunking(batch, out_h * out_w * cin * x.dtype.itemsize, FILTER_GRAD_CHUNK_BYTES)
    x = in_chunks(x, steps, chunk)
    dy = in_chunks(dy, steps, chunk).reshape(steps, chunk * out_h * out_w, cout)

    def add_chunk(total, chunk_pair):
        xc, dyc = chunk_pair
        xc = _pad(xc, pads)  # per chunk: no padded copy of the whole batch
        taps = [lax.dot_general(_tap(xc, ky, kx, strides, dilation, (out_h, out_w)).reshape(-1, cin), dyc,
                                (((0,), (0,)), ((), ())), preferred_element_type=jnp.float32)
                for ky in range(kh) for kx in range(kw)]
        return total + jnp.stack(taps).reshape(kernel_shape), None

    total, _ = lax.scan(add_chunk, jnp.zeros(kernel_shape, jnp.float32), (x, dy))
    return total


def _native(x, w, strides, pads, dilation):
    return lax.conv_general_dilated(x, w, strides, pads, rhs_dilation=dilation, dimension_numbers=NHWC)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _gemm_conv(x, w, strides, pads, dilation):
    return _gemm_conv_fwd(x, w, strides, pads, dilation)[0]


def _gemm_conv_fwd(x, w, strides, pads, dilation):
    kh, kw, cin, cout = w.shape
    out_hw = jax.eval_shape(lambda: _native(x, w, strides, pads, dilation)).shape[1:3]
    patches = _patches(x, (kh, kw), strides, pads, dilation, out_hw)
    y = patches.reshape(-1, kh * kw * cin) @ _patch_kernel(w)
    return y.reshape(x.shape[0], *out_hw, cout), (x, w, patches)


def _gemm_conv_bwd(strides, pads, dilation, residuals, dy):
    x, w, patches = residuals
    kh, kw, cin, cout = w.shape
    rows = patches.reshape(-1, kh * kw * cin)
    dw = lax.dot_general(rows, dy.reshape(-1, cout), (((0,), (0,)), ((), ())))
    dw = jnp.transpose(dw.reshape(kw, kh, cin, cout), (1, 0, 2, 3))
    return _input_gradient(x, w, strides, pads, dilation, dy), dw.astype(w.dtype)


_gemm_conv.defvjp(_gemm_conv_fwd, _gemm_conv_bwd)


def _input_gradient(x, w, strides, pads, dilation, dy):
    """XLA's transposed convolution (a forward-shaped convolution, which XLA CPU does well)."""
    return jax.vjp(lambda x_: _native(x_, w, strides, pads, dilation), x)[1](dy)[0]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _tap_conv(x, w, strides, pads, dilation):
    return _native(x, w, strides, pads, dilation)


def _tap_conv_fwd(x, w, strides, pads, dilation):
    return _native(x, w, strides, pads, dilation), (x, w)


def _tap_conv_bwd(strides, pads, dilation, residuals, dy):
    x, w = residuals
    dw = _filter_gradient_by_taps(x, dy, w.shape, strides, pads, dilation)
    return _input_gradient(x, w, strides, pads, dilation, dy), dw.astype(w.dtype)


_tap_conv.defvjp(_tap_conv_fwd, _tap_conv_bwd)


def _plain(lhs, rhs, dimension_numbers, lhs_dilation, feature_group_count, batch_group_count,
           preferred_element_type) -> bool:
    numbers = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) if dimension_numbers else None
    return (lhs.ndim == 4 and numbers == NHWC and feature_group_count == 1 and batch_group_count == 1
            and all(d == 1 for d in (lhs_dilation or (1, 1))) and preferred_element_type is None)


# Patch rows wider than this make building the patch matrix (a concatenation along channels)
# cost more on CPU than the GEMM saves over XLA's forward convolution: measured on the seed CNN,
# im2col wins for the RGB stem (3x3x3 = 27) and loses for 3x3x32 = 288 (benchmarks/conv_speed.py).
GEMM_MAX_PATCH = 64


def conv_general_dilated(lhs, rhs, window_strides: Sequence[int], padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count: int = 1, batch_group_count: int = 1,
                         precision=None, preferred_element_type=None):
    """``lax.conv_general_dilated``'s signature and values, with CPU-fast forward and gradients.

    NHWC/HWIO convolutions with narrow patches (``kh*kw*C_in <= GEMM_MAX_PATCH``) run as im2col
    GEMMs; wider ones keep XLA's forward and input-gradient convolutions and compute the filter
    gradient by :func:`_filter_gradient_by_taps`. Grouped, input-dilated or other-layout
    convolutions are XLA's own.
    """
    if not _plain(lhs, rhs, dimension_numbers, lhs_dilation, feature_group_count, batch_group_count,
                  preferred_element_type):
        return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                        dimension_numbers, feature_group_count, batch_group_count, precision,
                                        preferred_element_type)
    strides = tuple(int(s) for s in window_strides)
    dilation = tuple(int(d) for d in (rhs_dilation or (1, 1)))
    pads = _explicit_padding(padding, lhs.shape[1:3], rhs.shape[:2], strides, dilation)
    narrow = rhs.shape[0] * rhs.shape[1] * rhs.shape[2] <= GEMM_MAX_PATCH
    return (_gemm_conv if narrow else _tap_conv)(lhs, rhs, strides, pads, dilation)


def conv_for_platform(choice: str = "auto"):
    """The convolution for ``nn.Conv(conv_general_dilated=...)``; ``None`` is XLA's.

    ``"fast"``: this module's :func:`conv_general_dilated`; ``"native"``: XLA's; ``"auto"``:
    this module's on a CPU whose XLA convolutions run on one thread (when
    :mod:`mtl_jax.cpu_flags` could not switch them to XLA's multi-threaded ones), XLA's otherwise
    (multi-threaded CPU, GPU, TPU).
    """
    _check_choice(choice)
    if choice == "fast" or (choice == "auto" and jax.default_backend() == "cpu"
                            and not cpu_flags.cpu_convolutions_multithreaded()):
        return conv_general_dilated
    return None


def fast_pooling(choice: str = "auto") -> bool:
    """Whether :func:`max_pool` takes its fast path: ``"fast"``, or ``"auto"`` on CPU."""
    _check_choice(choice)
    return choice == "fast" or (choice == "auto" and jax.default_backend() == "cpu")


def _check_choice(choice: str) -> None:
    if choice not in CONV_CHOICES:
        raise ValueError(f"conv must be one of {CONV_CHOICES}, got {choice!r}")


def max_pool(x, window: tuple[int, int], fast: bool = True):
    """Non-overlapping max pooling (stride = window, remainder dropped as in VALID pooling).

    The fast path's gradient goes to every position equal to its window's maximum (one
    fused elementwise pass); XLA's ``select_and_scatter`` picks one of tied positions.
    """
    if not fast:
        return nn.max_pool(x, window, strides=window)
    b, h, w, c = x.shape
    wy, wx = window
    return _window_max(x[:, : h - h % wy, : w - w % wx], tuple(window))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _window_max(x, window):
    # An elementwise maximum of the window's strided slices: XLA fuses it (and the ReLU before
    # it) into one pass, where a reshape + reduce wrote the whole map out first (~13 ms -> 1 ms
    # on the seed CNN's first layer).
    slices = [x[:, i::window[0], j::window[1]] for i in range(window[0]) for j in range(window[1])]
    return functools.reduce(jnp.maximum, slices)


def _window_max_fwd(x, window):
    y = _window_max(x, window)
    return y, (x, y)


def window_gradient(x, pooled, g, window, keep=None):
    """The gradient of non-overlapping max pooling with respect to ``x`` (whose height and width
    the window divides): ``g`` at every position equal to its window's maximum (and where
    ``keep``, a boolean map like ``x``, holds), 0 elsewhere; one fused elementwise pass."""
    b, h, w, c = x.shape
    spread = (slice(None), slice(None), None, slice(None), None, slice(None))
    blocks = x.reshape(b, h // window[0], window[0], w // window[1], window[1], c)
    hit = blocks == pooled[spread]
    if keep is not None:
        hit = hit & keep.reshape(blocks.shape)
    return jnp.where(hit, g[spread], 0.0).reshape(x.shape).astype(x.dtype)


def _window_max_bwd(window, residuals, dy):
    x, y = residuals
    return (window_gradient(x, y, dy, window),)


_window_max.defvjp(_window_max_fwd, _window_max_bwd)
