"""Soft parameter sharing: one column (network) per task, coupled by cross-stitch units or a penalty.

The ``T`` columns have the same layers; their parameters are stacked on a leading task axis
(``params["columns"]``: kernels ``[T, ...]``) so every layer of all columns is one batched
GEMM or convolution, never a Python loop over tasks. After layer ``l`` the activations
``h^l`` are ``[T, B, ...]``.

**Cross-stitch** (Misra, Shrivastava, Gupta & Hebert 2016, "Cross-stitch Networks for
Multi-task Learning", CVPR). After every layer a learned ``T x T`` matrix ``alpha^l`` mixes
the columns' activations::

    h~_t^l = sum_s alpha^l_ts h_s^l

initialised to ``alpha_tt = self_weight`` and ``alpha_ts = (1 - self_weight) / (T - 1)``
(the paper's 0.9 / 0.1 for two tasks); ``self_weight = 1`` starts from independent
networks. Every column then influences every task, so *all* column parameters and the
stitch units are shared; task ``t`` owns only its head.

**Penalty-coupled columns** (``stitch=False``; Duong, Cohn, Bird & Cook 2015 for the L2
coupling; Yang & Hospedales 2017 for the trace norm): the columns do not exchange
activations; :mod:`mtl_jax.models.sharing_penalties` adds a penalty between the task
parameters to the total loss. Column ``t`` then receives only task ``t``'s gradient (plus
the penalty's). The stacked columns still count as "shared" for the gradient methods,
which see the exact Gramian over them: with no stitching it is diagonal (the tasks share
no parameter, so they cannot conflict), which is itself worth knowing.

In both cases the shared representation is the stacked ``[T, B, ...]`` output of the last
layer; task ``t``'s head reads ``z[t]``.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mtl_jax.models.contract import Architecture, owner_by_prefix, task_copy
from mtl_jax.models.mixed_precision import as_compute_floats
from mtl_jax.models.conv import conv_for_platform, fast_pooling, max_pool
from mtl_jax.models.heads import head_for
from mtl_jax.models.trunks import as_float_image
from mtl_jax.tasks import Task
from flax.core import FrozenDict

LAYERS = ("dense", "conv")
_STACKED_INIT = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal", batch_axis=(0,))


class StackedDense(nn.Module):
    """``T`` dense layers on ``[T, B, in]``: kernel ``[T, in, out]``, one batched GEMM."""

    features: int

    @nn.compact
    def __call__(self, h):
        kernel = self.param("kernel", _STACKED_INIT, (h.shape[0], h.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros, (h.shape[0], self.features))
        return jnp.einsum("tbi,tio->tbo", h, kernel) + bias[:, None]


class StackedConv(nn.Module):
    """``T`` 3x3 SAME convolutions on ``[T, B, H, W, in]``: kernel ``[T, 3, 3, in, out]``, one
    batched convolution (``vmap`` over the task axis)."""

    features: int
    conv: str = "auto"

    @nn.compact
    def __call__(self, h):
        kernel = self.param("kernel", _STACKED_INIT, (h.shape[0], 3, 3, h.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros, (h.shape[0], self.features))
        conv = conv_for_platform(self.conv) or jax.lax.conv_general_dilated

        def one(x, w):
            return conv(x, w, (1, 1), "SAME", lhs_dilation=(1, 1), rhs_dilation=(1, 1),
                        dimension_numbers=("NHWC", "HWIO", "NHWC"))

        return jax.vmap(one)(h, kernel) + bias[:, None, None, None]


class Columns(nn.Module):
    """The stacked columns' layers; ``stage(l, h)`` applies layer ``l`` to ``[T, B, ...]``."""

    features: Sequence[int]
    layer: str = "dense"
    conv: str = "auto"

    def setup(self):
        if self.layer not in LAYERS:
            raise ValueError(f"columns: layer must be one of {LAYERS}, got {self.layer!r}")
        make = StackedDense if self.layer == "dense" else (lambda w: StackedConv(w, self.conv))
        self.stages = [make(width) for width in self.features]

    def __call__(self, level: int, h):
        h = nn.relu(self.stages[level](h))
        if self.layer == "conv":
            t, b = h.shape[:2]
            pooled = max_pool(h.reshape(t * b, *h.shape[2:]), (2, 2), fast=fast_pooling(self.conv))
            h = pooled.reshape(t, b, *pooled.shape[1:])
        return h


class TaskColumns(Architecture):
    """One column per task (``Dense-ReLU`` or ``conv3x3-ReLU-maxpool2`` per width), cross-stitched
    after every layer when ``stitch`` (see the module docstring)."""

    heads: Mapping[str, nn.Module]
    features: Sequence[int] = (64, 64)
    layer: str = "dense"
    stitch: bool = True
    self_weight: float = 0.9
    conv: str = "auto"

    def setup(self):
        self.columns = Columns(tuple(self.features), self.layer, self.conv)
        if self.stitch:
            self.stitches = [self.param(f"stitch_{level}", self._stitch_init) for level in range(len(self.features))]

    def _stitch_init(self, key):
        """``alpha_tt = self_weight``, the rest of each row spread evenly over the other tasks."""
        num_tasks = len(self.heads)
        off = (1.0 - self.self_weight) / max(num_tasks - 1, 1)
        return off * jnp.ones((num_tasks, num_tasks)) + (self.self_weight - off) * jnp.eye(num_tasks)

    def represent(self, x, train: bool = False):
        x = as_float_image(x) if self.layer == "conv" else as_compute_floats(x.reshape(x.shape[0], -1))
        h = jnp.broadcast_to(x, (len(self.heads), *x.shape))
        for level in range(len(self.features)):
            h = self.columns(level, h)
            if self.stitch:
                h = jnp.einsum("ts,s...->t...", self.stitches[level], h)
        return h

    def predict_from(self, z, train: bool = False):
        return {name: head(task_copy(z, name, self.heads)[index], train=train)
                for index, (name, head) in enumerate(self.heads.items())}

    def param_owner(self, name: str) -> str:
        return owner_by_prefix(name, self.heads, ("heads_",), ("columns", "stitch_"), "TaskColumns")


def task_columns(tasks: Sequence[Task], *, features: Sequence[int] = (64, 64), layer: str = "dense",
                 stitch: bool = True, self_weight: float = 0.9, conv: str = "auto", head_hidden: Sequence[int] = (),
                 pool: str = "flatten", output_size: tuple[int, int] | None = None) -> TaskColumns:
    """Per-task columns with a head each; ``stitch=True`` is a cross-stitch network."""
    if len(tasks) < 2 and stitch:
        raise ValueError("a cross-stitch network needs at least two tasks")
    heads = FrozenDict({t.name: head_for(t, hidden=tuple(head_hidden), pool=pool, output_size=output_size)
                        for t in tasks})
    return TaskColumns(heads, tuple(features), layer, stitch, self_weight, conv)
