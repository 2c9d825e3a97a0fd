"""The scale-invariant log-loss option, usable with any weighting method.

``log_losses(method)`` hands the method ``log(L_i + eps)`` instead of ``L_i`` and turns its
weights ``v_i`` into weights on the raw losses,

    w_i = v_i / (L_i + eps),   so   sum_i w_i grad L_i = grad sum_i v_i log(L_i + eps),

the gradient of the method's objective on log-losses. Multiplying a task's loss by a
constant then leaves the update unchanged (up to ``eps``): no task dominates by units alone.
This is the loss transform of DB-MTL (Lin et al. 2023) and of log-loss baselines.

References: B. Lin, W. Jiang, F. Ye, Y. Zhang, P. Chen, Y.-C. Chen, S. Liu, J. T. Kwok.
"Dual-Balancing for Multi-Task Learning", arXiv:2308.12029, 2023.
"""
from __future__ import annotations

import functools

import jax.numpy as jnp

from mtl_jax.weighting.base import Weighting


@functools.lru_cache(maxsize=64)
def log_losses(method: Weighting, eps: float = 1e-8) -> Weighting:
    def update(losses, state, key):
        shifted = losses + eps
        weights, state = method.update(jnp.log(shifted), state, key)
        return weights / shifted, state

    return Weighting(method.init, update)
