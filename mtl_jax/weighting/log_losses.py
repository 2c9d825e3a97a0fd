"""The scale-invariant log-loss option, usable with any weighting method.

``log_losses(method)`` makes the model minimise ``sum_i v_i log(L_i + eps)`` where ``v`` are
the method's weights, decided by its own rule from the raw losses (so UW still learns
variances of ``L_i``, DWA still compares epoch losses, GradNorm still measures training
rates). On the raw losses the step's weights are therefore

    w_i = v_i / (L_i + eps),   so   sum_i w_i grad L_i = sum_i v_i grad log(L_i + eps),

and methods that balance gradients receive the Gramian of the log-loss gradients,
``G_ij / ((L_i + eps)(L_j + eps))``. Multiplying a task's loss by a constant leaves the update
unchanged (up to ``eps``): no task dominates by its units alone. This is the loss-scale
half of DB-MTL (Lin et al. 2023), here available to every method.

References: B. Lin, W. Jiang, F. Ye, Y. Zhang, P. Chen, Y.-C. Chen, S. Liu, J. T. Kwok.
"Dual-Balancing for Multi-Task Learning", arXiv:2308.12029, 2023.
"""
from __future__ import annotations

import functools

import jax.numpy as jnp

from mtl_jax.weighting.base import Weighting


@functools.lru_cache(maxsize=64)
def log_losses(method: Weighting, eps: float = 1e-8) -> Weighting:
    def update(losses, state, key, *gramian):
        shifted = losses + eps
        weights, state = method.update(losses, state, key, *[g / jnp.outer(shifted, shifted) for g in gramian])
        return weights / shifted, state

    return Weighting(method.init, update, method.needs)
