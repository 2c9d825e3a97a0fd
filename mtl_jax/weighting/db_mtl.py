"""DB-MTL, dual-balancing multi-task learning (Lin et al. 2023), at the feature level.

Loss scale is balanced by the log transform, gradient magnitude by rescaling every task's
gradient to the largest one:

    g_i = ||grad_z log(L_i + eps)|| = ||grad_z L_i|| / (L_i + eps)
    g^_i <- b_t g^_i + (1 - b_t) g_i,     b_t = beta / t^beta_sigma        (EMA, step t >= 1)
    alpha_i = max_j g^_j / g^_i,           update = sum_i alpha_i grad log(L_i + eps)

so the step's weights on the raw losses are ``w_i = alpha_i / (L_i + eps)`` and every
task's log-loss gradient at ``z`` reaches the magnitude of the largest. The paper keeps an
EMA of the gradient *vectors* of all shared parameters (``T x P`` state); here the EMA is of
their norms at the shared representation ``z`` (``needs="feature_gramian"``), which keeps
the step at EW's cost; the direction uses this step's gradients.

References: B. Lin, W. Jiang, F. Ye, Y. Zhang, P. Chen, Y.-C. Chen, S. Liu, J. T. Kwok.
"Dual-Balancing for Multi-Task Learning", arXiv:2308.12029, 2023.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp

from mtl_jax.registry import WEIGHTINGS
from mtl_jax.tasks import Task
from mtl_jax.balancing import Method, among_present, present_of
from mtl_jax.caching import by_value


class DBMTLState(NamedTuple):
    norms: jax.Array   # EMA of ||grad_z log L_i||
    step: jax.Array


@by_value
def db_mtl(beta: float = 0.9, beta_sigma: float = 0.5, eps: float = 1e-8) -> Method:
    def init(num_tasks: int) -> DBMTLState:
        return DBMTLState(jnp.zeros((num_tasks,), jnp.float32), jnp.zeros((), jnp.int32))

    def update(info, state: DBMTLState, key):
        losses, gramian = info.losses, info.gramian
        del key
        present = present_of(info)  # an absent task's average norm does not move, nor count
        grad_norms = jnp.sqrt(jnp.maximum(jnp.diagonal(gramian), 0.0))
        shifted = losses + eps
        step = state.step + 1
        b = beta / step.astype(jnp.float32) ** beta_sigma
        norms = jnp.where(present, (1 - b) * grad_norms / shifted + b * state.norms, state.norms)
        alpha = jnp.max(among_present(norms, present)) / jnp.maximum(norms, eps)
        alpha = jnp.where(norms > eps, alpha, 1.0)  # a task with no gradient keeps weight 1
        return among_present(alpha / shifted, present), DBMTLState(norms, step)

    return Method(init, update, needs="feature_gramian")


@WEIGHTINGS.register("db_mtl", "DB-MTL (Lin et al. 2023): log-losses plus gradients rescaled to the largest "
                               "task's magnitude; feature level")
def from_tasks(tasks: Sequence[Task], beta: float = 0.9, beta_sigma: float = 0.5) -> Method:
    del tasks
    return db_mtl(float(beta), float(beta_sigma))
