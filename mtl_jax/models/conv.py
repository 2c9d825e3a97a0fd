"""Convolution and pooling that are fast on CPU, with the values of XLA's own.

On CPU, XLA is slow at two things a small CNN spends most of its step on: max pooling's
gradient (``select_and_scatter``: ~60-130 ms a layer in the seed CNN step) and convolutions
with few input channels (the RGB stem, forward and filter gradient). This module provides

* :func:`max_pool`: non-overlapping windows pooled by a reshape and a max, with a custom
  VJP that routes each window's gradient to the positions equal to its maximum in one fused
  elementwise pass (ties share it; after a ReLU, tied zeros receive none anyway);
* :func:`gemm_conv_general_dilated`: the signature of ``lax.conv_general_dilated``, computed
  for NHWC inputs and HWIO kernels with the im2col patches ``P`` (one row of
  ``kh*kw*C_in`` values per output pixel) through a ``jax.custom_vjp``::

      forward:          y  = P W          (one GEMM; W reshaped to [kh*kw*C_in, C_out])
      filter gradient:  dW = P^T dy       (one GEMM over the saved patches)
      input gradient:   dx = XLA's transposed convolution of dy

  grouped, input-dilated or other-layout convolutions fall back to XLA;
* :func:`conv_general_dilated`: the CPU choice per layer, GEMM where the patch rows are
  narrow (``GEMM_MAX_PATCH``), XLA's convolution otherwise.

:func:`conv_for_platform` selects this on CPU and XLA's convolution elsewhere (GPU and TPU
convolutions are fast); trunks take ``conv="auto" | "fast" | "native"``. Measured ratios
are in ``benchmarks/README.md``.
"""
from __future__ import annotations

import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

NHWC = lax.conv_dimension_numbers((1, 1, 1, 1), (1, 1, 1, 1), ("NHWC", "HWIO", "NHWC"))
CONV_CHOICES = ("auto", "fast", "native")


def _explicit_padding(padding, in_shape, kernel_shape, strides, dilation):
    if isinstance(padding, str):
        effective = [(k - 1) * d + 1 for k, d in zip(kernel_shape, dilation)]
        return tuple(lax.padtype_to_pads(in_shape, effective, strides, padding))
    return tuple((int(lo), int(hi)) for lo, hi in padding)


def _patches(x, kernel_hw, strides, pads, dilation, out_hw):
    """``[B, Ho, Wo, kh*kw*C]``: the input window of every output pixel, (ky, kx, c) ordered."""
    x = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
    slices = []
    for ky in range(kernel_hw[0]):
        for kx in range(kernel_hw[1]):
            start = (0, ky * dilation[0], kx * dilation[1], 0)
            limit = (x.shape[0], start[1] + (out_hw[0] - 1) * strides[0] + 1,
                     start[2] + (out_hw[1] - 1) * strides[1] + 1, x.shape[3])
            slices.append(lax.slice(x, start, limit, (1, strides[0], strides[1], 1)))
    return jnp.concatenate(slices, axis=-1)


def _native(x, w, strides, pads, dilation):
    return lax.conv_general_dilated(x, w, strides, pads, rhs_dilation=dilation, dimension_numbers=NHWC)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _gemm_conv(x, w, strides, pads, dilation):
    return _gemm_conv_fwd(x, w, strides, pads, dilation)[0]


def _gemm_conv_fwd(x, w, strides, pads, dilation):
    kh, kw, cin, cout = w.shape
    out_hw = jax.eval_shape(lambda: _native(x, w, strides, pads, dilation)).shape[1:3]
    patches = _patches(x, (kh, kw), strides, pads, dilation, out_hw)
    y = patches.reshape(-1, kh * kw * cin) @ w.reshape(kh * kw * cin, cout)
    return y.reshape(x.shape[0], *out_hw, cout), (x, w, patches)


def _gemm_conv_bwd(strides, pads, dilation, residuals, dy):
    x, w, patches = residuals
    kh, kw, cin, cout = w.shape
    rows = patches.reshape(-1, kh * kw * cin)
    dw = lax.dot_general(rows, dy.reshape(-1, cout), (((0,), (0,)), ((), ())))
    dx = jax.vjp(lambda x_: _native(x_, w, strides, pads, dilation), x)[1](dy)[0]
    return dx, dw.reshape(w.shape).astype(w.dtype)


_gemm_conv.defvjp(_gemm_conv_fwd, _gemm_conv_bwd)


def _plain(lhs, rhs, dimension_numbers, lhs_dilation, feature_group_count, batch_group_count,
           preferred_element_type) -> bool:
    numbers = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) if dimension_numbers else None
    return (lhs.ndim == 4 and numbers == NHWC and feature_group_count == 1 and batch_group_count == 1
            and all(d == 1 for d in (lhs_dilation or (1, 1))) and preferred_element_type is None)


def gemm_conv_general_dilated(lhs, rhs, window_strides: Sequence[int], padding, lhs_dilation=None,
                              rhs_dilation=None, dimension_numbers=None, feature_group_count: int = 1,
                              batch_group_count: int = 1, precision=None, preferred_element_type=None):
    """``lax.conv_general_dilated`` computed as im2col GEMMs wherever the form allows it."""
    if not _plain(lhs, rhs, dimension_numbers, lhs_dilation, feature_group_count, batch_group_count,
                  preferred_element_type):
        return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                        dimension_numbers, feature_group_count, batch_group_count, precision,
                                        preferred_element_type)
    strides = tuple(window_strides)
    dilation = tuple(rhs_dilation or (1, 1))
    pads = _explicit_padding(padding, lhs.shape[1:3], rhs.shape[:2], strides, dilation)
    return _gemm_conv(lhs, rhs, strides, pads, dilation)


# Patch rows wider than this make building the patches (a concatenation along channels)
# cost more on CPU than XLA's convolution saves: measured on the seed CNN, the GEMM path wins
# for the RGB stem (3x3x3 = 27) and loses for 3x3x32 = 288 (benchmarks/conv_speed.py).
GEMM_MAX_PATCH = 64


def conv_general_dilated(lhs, rhs, window_strides: Sequence[int], padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count: int = 1, batch_group_count: int = 1,
                         precision=None, preferred_element_type=None):
    """The CPU choice: GEMM convolution for narrow patches (see GEMM_MAX_PATCH), XLA's otherwise."""
    narrow = rhs.ndim == 4 and rhs.shape[0] * rhs.shape[1] * rhs.shape[2] <= GEMM_MAX_PATCH
    conv = gemm_conv_general_dilated if narrow else lax.conv_general_dilated
    return conv(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
                feature_group_count, batch_group_count, precision, preferred_element_type)


def conv_for_platform(choice: str = "auto"):
    """The convolution function for ``nn.Conv(conv_general_dilated=...)``; ``None`` is XLA's."""
    if choice not in CONV_CHOICES:
        raise ValueError(f"conv must be one of {CONV_CHOICES}, got {choice!r}")
    if choice == "fast" or (choice == "auto" and jax.default_backend() == "cpu"):
        return conv_general_dilated
    return None


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
    b, h, w, c = x.shape
    return x.reshape(b, h // window[0], window[0], w // window[1], window[1], c).max(axis=(2, 4))


def _window_max_fwd(x, window):
    y = _window_max(x, window)
    return y, (x, y)


def _window_max_bwd(window, residuals, dy):
    x, y = residuals
    b, h, w, c = x.shape
    blocks = x.reshape(b, h // window[0], window[0], w // window[1], window[1], c)
    hit = blocks == y[:, :, None, :, None, :]
    return (jnp.where(hit, dy[:, :, None, :, None, :], 0.0).reshape(x.shape).astype(x.dtype),)


_window_max.defvjp(_window_max_fwd, _window_max_bwd)
