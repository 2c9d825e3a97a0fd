"""Convolution and pooling that are fast on CPU, with the values of XLA's own, in both AD modes.

On CPU, XLA is slow at three things a small CNN spends most of its step on: max pooling's
gradient (``select_and_scatter``: ~60-130 ms a layer in the seed CNN step) and, with the
one-thread YNNPACK convolutions jaxlib 0.10 uses by default, the filter gradient of a
convolution (91 ms for the seed CNN's 32 -> 64 layer, ~4x its forward) and convolutions with
few input channels (the RGB stem). This module provides

* :func:`max_pool` and :func:`relu_max_pool` (``max_pool(relu(y + b))``): non-overlapping
  windows pooled by one variadic reduction over the window's strided slices (fused with the
  ReLU and bias before it), which also writes out, as an int8 map, the first position holding
  each window's maximum;
* :func:`conv_general_dilated`: the signature and values of ``lax.conv_general_dilated``;
  for NHWC inputs and HWIO kernels it computes

  - narrow patches (``kh*kw*C_in <= GEMM_MAX_PATCH``, e.g. the RGB stem), with the im2col
    patch matrix ``P`` (one row of ``kh*kw*C_in`` values per output pixel)::

        forward:          y  = P W          (one GEMM; W reshaped to [kh*kw*C_in, C_out])
        filter gradient:  dW = P^T dy       (one GEMM over the saved patches)

  - wider ones: XLA's forward convolution and, for the filter gradient, one
    ``[C_in, C_out]`` GEMM per kernel tap over chunks of images (:func:`_by_taps`)::

        dW[ky, kx] = sum_b sum_{y, x} x_pad[b, s*y + d*ky, s*x + d*kx]^T dy[b, y, x]

  - both: the input gradient is XLA's transposed convolution (forward-shaped, which XLA
    CPU does well).

  Grouped, input-dilated or other-layout convolutions are XLA's own.

Every layer here is a ``jax.custom_jvp`` whose tangent is written in plain linear JAX operations
chosen so that their transposes, which reverse mode derives, are the fast gradients above: the
pooling tangent picks each window's tangent at the int8 index (:func:`pick`), so its transpose
sends the gradient exactly where XLA's ``select_and_scatter`` does, ties included, reading only
the index (the 32 -> 64 layer's 16 MB conv output is freed after the forward); the filter
tangent ``conv(x, dW)`` is ``P dW`` or the per-tap GEMMs. So ``jax.grad`` is as fast as a
hand-written VJP, and ``jax.jvp``, ``jax.linearize``, ``jax.jacfwd`` and Hessian-vector products
(forward over reverse, or reverse over reverse) work as through XLA's layers
(``tests/test_forward_mode.py``). ``jax.checkpoint`` around the tangents keeps large
recomputable intermediates (per-tap slices, comparisons with the index) out of the residuals.

:func:`conv_for_platform` picks the convolution for ``conv="auto" | "fast" | "native"`` and
:func:`fast_pooling` the pooling: on CPU, ``"auto"`` pools with :func:`max_pool` and keeps
XLA's convolution when :func:`mtl_jax.cpu.enable_fast_convolutions` made XLA's CPU convolutions multi-threaded
(then they beat this module's), this module's otherwise; GPU and TPU keep XLA's layers.
Measured step times and ratios are in ``benchmarks/README.md``.
"""
from __future__ import annotations

import dataclasses

import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.custom_derivatives import SymbolicZero

from mtl_jax import cpu

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
    rows = row_taps(x, kernel_hw[0], 0, strides[0], out_hw[0], dilation[0])
    return column_taps(rows, kernel_hw[1], 0, strides[1], out_hw[1], dilation[1])


def row_taps(x_padded, kh: int, start: int, step: int, count: int, dilation: int = 1):
    """The ``kh`` kernel rows' input rows ``start + dilation*ky + step*i`` (``i < count``),
    concatenated along channels: ``[B, count, W, kh*C]``."""
    return jnp.concatenate([lax.slice_in_dim(x_padded, start + ky * dilation,
                                             start + ky * dilation + (count - 1) * step + 1, step, axis=1)
                            for ky in range(kh)], axis=-1)


def column_taps(rows, kw: int, start: int, step: int, count: int, dilation: int = 1):
    """The ``kw`` kernel columns' columns ``start + dilation*kx + step*j`` of :func:`row_taps`'s
    output, as patches ``[B, H, count, kw*kh*C]`` ordered (kx, ky, c)."""
    columns = [lax.slice_in_dim(rows, start + kx * dilation, start + kx * dilation + (count - 1) * step + 1, step,
                                axis=2) for kx in range(kw)]
    return jnp.stack(columns, axis=-2).reshape(*rows.shape[:2], count, kw * rows.shape[-1])


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


def _native(x, w, strides, pads, dilation):
    return lax.conv_general_dilated(x, w, strides, pads, rhs_dilation=dilation, dimension_numbers=NHWC)


def _is_zero(tangent) -> bool:
    return isinstance(tangent, SymbolicZero)


def _input_tangent(t_x, w, strides, pads, dilation):
    """``conv(t_x, w)``: XLA's convolution, whose transpose is XLA's transposed convolution
    (the input gradient, which XLA CPU does well); None for a zero tangent (e.g. the image)."""
    return None if _is_zero(t_x) else _native(t_x, w, strides, pads, dilation)


def _sum_or_zeros(like, *terms):
    """The sum of the terms that are not None (zero tangents), or zeros shaped like ``like``."""
    terms = [t for t in terms if t is not None]
    return functools.reduce(jnp.add, terms) if terms else jnp.zeros_like(like)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4))
def _gemm_conv(x, w, strides, pads, dilation):
    return _gemm_conv_with_patches(x, w, strides, pads, dilation)[0]


def _gemm_conv_with_patches(x, w, strides, pads, dilation):
    kh, kw, cin, cout = w.shape
    out_hw = jax.eval_shape(lambda: _native(x, w, strides, pads, dilation)).shape[1:3]
    patches = _patches(x, (kh, kw), strides, pads, dilation, out_hw).reshape(-1, kh * kw * cin)
    return (patches @ _patch_kernel(w)).reshape(x.shape[0], *out_hw, cout), patches


def _gemm_conv_jvp(strides, pads, dilation, primals, tangents):
    """``dy = P dW + conv(dx, W)``. Reverse mode transposes it into ``dW = P^T g`` (one GEMM
    over the patches kept from the forward pass) and XLA's transposed convolution for ``dx``."""
    (x, w), (t_x, t_w) = primals, tangents
    y, patches = _gemm_conv_with_patches(x, w, strides, pads, dilation)
    by_kernel = None if _is_zero(t_w) else (patches @ _patch_kernel(t_w)).reshape(y.shape)
    by_input = _input_tangent(t_x, w, strides, pads, dilation)
    return y, _sum_or_zeros(y, by_kernel, by_input)


_gemm_conv.defjvp(_gemm_conv_jvp, symbolic_zeros=True)


def _by_taps(x, t_w, strides, pads, dilation, out_hw):
    """``conv(x, t_w)`` as ``sum_{ky, kx} x_pad[b, s*y + d*ky, s*x + d*kx] t_w[ky, kx]``: one
    ``[C_in, C_out]`` GEMM per kernel tap over chunks of images in a ``lax.scan``, each chunk's taps
    recomputed from the chunk (``jax.checkpoint``), never kept.

    Linear in ``t_w``; its transpose, which reverse mode derives, is the filter gradient
    ``dW[ky, kx] = sum_{b, y, x} x_pad[b, s*y + d*ky, s*x + d*kx]^T g[b, y, x]``: per chunk, every
    operand small enough to sit in cache, unlike the ``kh*kw``-times larger patch matrix or XLA
    CPU's filter-gradient convolution. Batches the chunk does not divide are padded with zero
    images, which add nothing to the gradient and are cropped from the output.
    """
    kh, kw, cin, cout = t_w.shape
    batch = x.shape[0]
    steps, chunk = chunking(batch, out_hw[0] * out_hw[1] * cin * x.dtype.itemsize, FILTER_GRAD_CHUNK_BYTES)

    @functools.partial(jax.checkpoint, prevent_cse=False)
    def chunk_output(x_chunk):
        x_chunk = _pad(x_chunk, pads)  # per chunk: no padded copy of the whole batch
        taps = [lax.dot_general(_tap(x_chunk, ky, kx, strides, dilation, out_hw).reshape(-1, cin), t_w[ky, kx],
                                (((1,), (0,)), ((), ())), preferred_element_type=jnp.float32)
                for ky in range(kh) for kx in range(kw)]
        return None, functools.reduce(jnp.add, taps)

    out = lax.scan(lambda _, x_chunk: chunk_output(x_chunk), None, in_chunks(x, steps, chunk))[1]
    return out.reshape(steps * chunk, *out_hw, cout)[:batch].astype(x.dtype)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4))
def _tap_conv(x, w, strides, pads, dilation):
    return _native(x, w, strides, pads, dilation)


def _tap_conv_jvp(strides, pads, dilation, primals, tangents):
    """``dy = conv(dx, W) + conv(x, dW)``, the second by :func:`_by_taps`, whose transpose replaces
    XLA CPU's filter-gradient convolution in reverse mode."""
    (x, w), (t_x, t_w) = primals, tangents
    y = _native(x, w, strides, pads, dilation)
    by_kernel = None if _is_zero(t_w) else _by_taps(x, t_w, strides, pads, dilation, y.shape[1:3])
    by_input = _input_tangent(t_x, w, strides, pads, dilation)
    return y, _sum_or_zeros(y, by_kernel, by_input)


_tap_conv.defjvp(_tap_conv_jvp, symbolic_zeros=True)


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
    this module's on a CPU whose XLA convolutions run on one thread (unless
    :func:`mtl_jax.cpu.enable_fast_convolutions` switched them to XLA's multi-threaded ones),
    XLA's otherwise (multi-threaded CPU, GPU, TPU).
    """
    return conv_general_dilated if _path(choice) == "mtl_jax" else None


def _path(choice: str) -> str:
    """Where ``choice`` sends a convolution in this process: ``"mtl_jax"``, ``"xla-multithreaded"``
    or ``"xla-ynnpack"`` (CPU), or ``"xla-<platform>"``."""
    _check_choice(choice)
    platform = jax.default_backend()
    fast_xla = cpu.fast_convolutions_enabled()
    if choice == "fast" or (choice == "auto" and platform == "cpu" and not fast_xla):
        return "mtl_jax"
    if platform != "cpu":
        return f"xla-{platform}"
    return "xla-multithreaded" if fast_xla else "xla-ynnpack"


def convolution_path(model) -> str | None:
    """The convolution path(s) ``model``'s ``conv`` options take in this process (see :func:`_path`),
    or None for a model without a ``conv`` option. Different paths give different rounding, so a
    run records it (``run_signature.json``) and a resume must take the same one."""
    choices: set[str] = set()

    def walk(module, depth):
        if depth > 8 or not dataclasses.is_dataclass(module):
            return
        for field in dataclasses.fields(module):
            value = getattr(module, field.name, None)
            if field.name == "conv" and isinstance(value, str):
                choices.add(value)
            for item in value if isinstance(value, (tuple, list)) else (value,):
                if isinstance(item, nn.Module):
                    walk(item, depth + 1)

    walk(model, 0)
    return "+".join(sorted({_path(choice) for choice in choices})) or None


def fast_pooling(choice: str = "auto") -> bool:
    """Whether :func:`max_pool` takes its fast path: ``"fast"``, or ``"auto"`` on CPU."""
    _check_choice(choice)
    return choice == "fast" or (choice == "auto" and jax.default_backend() == "cpu")


def _check_choice(choice: str) -> None:
    if choice not in CONV_CHOICES:
        raise ValueError(f"conv must be one of {CONV_CHOICES}, got {choice!r}")


def max_pool(x, window: tuple[int, int], fast: bool = True):
    """Non-overlapping max pooling (stride = window, remainder dropped as in VALID pooling).

    The fast path's gradient goes, like XLA's ``select_and_scatter``, to the first position
    (row-major within the window) holding the window's maximum; it keeps only that position as
    an int8 map instead of the input.
    """
    if not fast:
        return nn.max_pool(x, window, strides=window)
    return _window_max(_crop(x, window), tuple(window))


def relu_max_pool(y, bias, window: tuple[int, int]):
    """``max_pool(relu(y + bias), window)`` on the fast path, with a custom VJP that needs neither
    ``y`` nor the ReLU's mask: the gradient goes to the window's first maximum when that is
    positive (as autodiff through ``relu`` and XLA's pooling routes it), and the bias gradient
    is summed over the pooled map (``window`` times smaller than ``y``)."""
    return _bias_relu_window_max(_crop(y, window), bias, tuple(window))


def _crop(x, window):
    return x[:, : x.shape[1] - x.shape[1] % window[0], : x.shape[2] - x.shape[2] % window[1]]


def window_slices(x, window):
    """The window's positions as ``window[0] * window[1]`` strided maps, row-major within the window."""
    return [x[:, i::window[0], j::window[1]] for i in range(window[0]) for j in range(window[1])]


def window_max_and_index(candidates, relu: bool = False):
    """The elementwise maximum of ``candidates`` (one map per window position, row-major) and, as
    int8, the first position that holds it. With ``relu``: the maximum of ``relu(candidates)``,
    and the index ``len(candidates)`` (no position: no gradient) where that maximum is 0.

    One variadic reduction over the stacked candidates, which XLA fuses with the strided slices
    that produce them, so the index is written out as an int8 map. (Computed elementwise instead,
    XLA recomputes it from the float input inside every gradient consumer.) For ``relu`` a zero
    candidate goes first, so that a window without a positive value picks it. Differentiable in
    both modes to any order: the maximum's tangent is the tangent of the candidate at the index.
    Inside a ``lax.scan`` body use :func:`scan_window_max_and_index`.
    """
    return _window_max_and_index(tuple(candidates), relu)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _window_max_and_index(candidates, relu):
    return _first_max(candidates, relu, jnp.int8)


@_window_max_and_index.defjvp
def _window_max_and_index_jvp(relu, primals, tangents):
    (candidates,), (t_candidates,) = primals, tangents
    maximum, index = _window_max_and_index(candidates, relu)
    t_maximum = functools.reduce(jnp.add, [jnp.where(index == j, t, 0) for j, t in enumerate(t_candidates)])
    return (maximum, index), (t_maximum, np.zeros(index.shape, jax.dtypes.float0))


def scan_window_max_and_index(candidates, relu: bool = False):
    """:func:`window_max_and_index` for a ``lax.scan`` body, differentiable to any order there too.

    A second-order derivative (a JVP of a linearization) partially evaluates the scan body, which
    inlines custom derivative rules, so the reduction itself is differentiated: JAX's generic reduce
    JVP fails on an operand whose tangent is a symbolic zero, such as the int8 positions. Here the
    positions are floats that formally depend on the candidates (a select XLA folds away); the
    float reduction costs ~2-3% of the seed CNN step against int8 (benchmarks/conv_speed.py).
    """
    return _first_max(tuple(candidates), relu, None)


def _first_max(candidates, relu, order_dtype):
    n = len(candidates)
    if relu:
        candidates = (jnp.zeros_like(candidates[0]), *candidates)
    stacked = jnp.stack(candidates, axis=-1)
    positions = lax.broadcasted_iota(order_dtype or stacked.dtype, stacked.shape, stacked.ndim - 1)
    order = positions if order_dtype else jnp.where(False, stacked, positions)

    def first_max(a, b):
        (value_a, index_a), (value_b, index_b) = a, b
        take_b = (value_b > value_a) | ((value_b == value_a) & (index_b < index_a))
        return jnp.where(take_b, value_b, value_a), jnp.where(take_b, index_b, index_a)

    init = (jnp.array(-jnp.inf, stacked.dtype), jnp.array(len(candidates), order.dtype))
    maximum, index = lax.reduce((stacked, order), init, first_max, (stacked.ndim - 1,))
    index = index.astype(jnp.int8)
    if relu:  # position 0 is the zero candidate: no window position
        index = jnp.where(index == 0, jnp.int8(n), index - jnp.int8(1))
    return maximum, index


def pick(index, t, window, t_bias=None):
    """The tangent of max pooling (of ``relu(y + bias)`` with ``t_bias``): at each window, ``t`` at
    the window's position ``index`` (from :func:`window_max_and_index`), plus ``t_bias``; 0 where
    ``index`` is no position (``window[0] * window[1]``: the ReLU cut the window off). ``t`` is
    ``[B, Hp * wy, Wp * wx, C]`` (cropped), the result ``[B, Hp, Wp, C]``; either may be None (zero).

    Linear in ``t`` and ``t_bias``; reverse mode derives its transpose, max pooling's gradient:
    each pooled gradient value sent to its window's position ``index``, 0 elsewhere (one fused
    pass), and the bias gradient summed over the pooled map, ``window`` times smaller than ``y``.
    ``jax.checkpoint`` keeps the comparisons with ``index`` out of the residuals: the backward
    pass reads only the int8 ``index``.
    """
    return _pick(index, t, t_bias, tuple(window))


@functools.partial(jax.checkpoint, static_argnums=(3,), prevent_cse=False)
def _pick(index, t, t_bias, window):
    terms = []
    if t is not None:
        b, h, w, c = t.shape
        positions = jnp.arange(window[0] * window[1], dtype=jnp.int8).reshape(1, 1, window[0], 1, window[1], 1)
        hit = index[:, :, None, :, None, :] == positions
        terms.append(jnp.where(hit, t.reshape(b, h // window[0], window[0], w // window[1], window[1], c), 0)
                     .sum(axis=(2, 4)))
    if t_bias is not None:
        terms.append(jnp.where(index < window[0] * window[1], t_bias, 0))
    return functools.reduce(jnp.add, terms)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _window_max(x, window):
    return window_max_and_index(window_slices(x, window))[0]


@_window_max.defjvp
def _window_max_jvp(window, primals, tangents):
    (x,), (t_x,) = primals, tangents
    pooled, index = window_max_and_index(window_slices(x, window))
    return pooled, pick(index, t_x, window)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def _bias_relu_window_max(y, bias, window):
    return window_max_and_index([s + bias for s in window_slices(y, window)], relu=True)[0]


@_bias_relu_window_max.defjvp
def _bias_relu_window_max_jvp(window, primals, tangents):
    """``d out = pick(index, dy) + db`` where the window's maximum is positive: reverse mode
    derives the input gradient and the bias gradient summed over the pooled map (``window`` times
    smaller than ``y``), from the int8 ``index`` alone."""
    (y, bias), (t_y, t_bias) = primals, tangents
    pooled, index = window_max_and_index([s + bias for s in window_slices(y, window)], relu=True)
    return pooled, pick(index, t_y, window, t_bias)
