"""Task heads: a global head for vector outputs and a decoder for per-pixel outputs.

What the outputs mean (values, class logits, label logits) is the task's business
(:mod:`mtl_jax.tasks`); a head only has to produce the right shape, so regression,
classification and multilabel tasks all use :class:`Head` with their ``output_dim``.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax

from mtl_jax.tasks import Task


class Head(nn.Module):
    """``[B, ...]`` features to ``[B, output_dim]``: pool, ``Dense-ReLU`` per hidden width, ``Dense``.

    ``pool`` reduces a feature map first: ``"flatten"`` (the seed's) or ``"mean"`` (global
    average pooling); vectors pass unchanged.
    """

    output_dim: int
    hidden: Sequence[int] = ()
    pool: str = "flatten"

    @nn.compact
    def __call__(self, z, train: bool = False):
        if z.ndim > 2:
            if self.pool == "flatten":
                z = z.reshape(z.shape[0], -1)
            elif self.pool == "mean":
                z = z.mean(axis=tuple(range(1, z.ndim - 1)))
            else:
                raise ValueError(f"Head: unknown pool {self.pool!r}; use 'flatten' or 'mean'")
        for width in self.hidden:
            z = nn.relu(nn.Dense(width)(z))
        return nn.Dense(self.output_dim)(z)


class PixelDecoder(nn.Module):
    """Feature map ``[B, h, w, C]`` to a per-pixel output ``[B, H, W, output_dim]``.

    Each hidden width doubles the resolution (nearest upsampling, ``conv3x3-ReLU``); the
    result is resized bilinearly to ``output_size`` and mapped by a ``1x1`` conv.
    """

    output_dim: int
    output_size: tuple[int, int]
    features: Sequence[int] = (64, 32)

    @nn.compact
    def __call__(self, z, train: bool = False):
        if z.ndim != 4:
            raise ValueError(f"PixelDecoder needs a [B, h, w, C] feature map, got shape {z.shape}")
        for width in self.features:
            b, h, w, c = z.shape
            z = jax.image.resize(z, (b, 2 * h, 2 * w, c), "nearest")
            z = nn.relu(nn.Conv(width, (3, 3), padding="SAME")(z))
        b, _, _, c = z.shape
        z = jax.image.resize(z, (b, *self.output_size, c), "bilinear")
        return nn.Conv(self.output_dim, (1, 1))(z)


def head_for(task: Task, *, hidden: Sequence[int] = (), pool: str = "flatten",
             output_size: tuple[int, int] | None = None, decoder_features: Sequence[int] = (64, 32)) -> nn.Module:
    """The head a task needs: :class:`PixelDecoder` for dense tasks, :class:`Head` otherwise."""
    if task.dense:
        if output_size is None:
            raise ValueError(f"task {task.name!r} is dense ({task.kind}): give output_size=(H, W) for its decoder")
        return PixelDecoder(task.output_dim, tuple(output_size), tuple(decoder_features))
    return Head(task.output_dim, tuple(hidden), pool)
