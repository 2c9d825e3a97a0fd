"""IMTL-L, the loss-balance half of impartial multi-task learning (Liu et al. 2021).

Each task has a learned scale ``s_i``; the model minimises ``sum_i e^{s_i} L_i`` and ``s``
descends ``sum_i (e^{s_i} L_i - s_i)`` with its own optax optimizer from the same
(gradient-stopped) losses. The optimum of ``e^{s} L - s`` is ``e^{s} = 1 / L``: every
scaled loss ``e^{s_i} L_i`` is driven to 1, so no task dominates by its loss scale. The
step's weights are ``w_i = e^{s_i}``.

References: L. Liu, Y. Li, Z. Kuang, J.-H. Xue, Y. Chen, W. Yang, Q. Liao, W. Zhang.
"Towards Impartial Multi-task Learning", ICLR 2021.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import optax

from mtl_jax.registry import WEIGHTINGS
from mtl_jax.tasks import Task
from mtl_jax.balancing import Method, among_present, keep_absent, present_of
from mtl_jax.caching import by_value


class IMTLLState(NamedTuple):
    log_scale: jax.Array  # s_i
    opt_state: optax.OptState


@by_value
def imtl_l(learning_rate: float = 1e-3) -> Method:
    optimizer = optax.adam(learning_rate)

    def objective(log_scale, losses):
        return jnp.sum(jnp.exp(log_scale) * losses - log_scale)

    def init(num_tasks: int) -> IMTLLState:
        s = jnp.zeros((num_tasks,), jnp.float32)
        return IMTLLState(s, optimizer.init(s))

    def update(info, state: IMTLLState, key):
        losses = info.losses
        del key
        present = present_of(info)
        grad = among_present(jax.grad(objective)(state.log_scale, losses), present)
        updates, opt_state = optimizer.update(grad, state.opt_state, state.log_scale)
        new = IMTLLState(optax.apply_updates(state.log_scale, updates), opt_state)
        return among_present(jnp.exp(state.log_scale), present), keep_absent(new, state, present)

    return Method(init, update)


@WEIGHTINGS.register("imtl_l", "IMTL-L (Liu et al. 2021): learned scales drive every scaled loss to 1")
def from_tasks(tasks: Sequence[Task], learning_rate: float = 1e-3) -> Method:
    del tasks
    return imtl_l(float(learning_rate))
