"""Dynamic Weight Average, DWA (Liu, Johns & Davison 2019).

With ``L_i(e)`` task i's mean training loss over epoch ``e`` and temperature ``T_temp``,

    r_i(e-1) = L_i(e-1) / L_i(e-2),     w_i(e) = T exp(r_i(e-1) / T_temp) / sum_j exp(r_j(e-1) / T_temp)

so the weights sum to ``T`` and a task whose loss fell least over the last epoch gets more
weight; ``w_i = 1`` for the first two epochs. The state averages the losses of the running
epoch (``period`` steps, the runner's steps per epoch) and keeps the last two epoch means.

References: S. Liu, E. Johns, A. J. Davison. "End-to-End Multi-Task Learning with
Attention", CVPR 2019.
"""
from __future__ import annotations

import functools
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp

from mtl_jax.registry import WEIGHTINGS
from mtl_jax.tasks import Task
from mtl_jax.balancing import Method


class DWAState(NamedTuple):
    running_sum: jax.Array   # [T] losses summed over the running epoch
    count: jax.Array         # steps in the running epoch
    last: jax.Array          # [T] mean loss of the last complete epoch
    before_last: jax.Array   # [T] mean loss of the epoch before it
    epochs: jax.Array        # complete epochs seen


def dwa(period: int, temperature: float = 2.0) -> Method:
    """DWA over epochs of ``period`` steps."""
    if period < 1 or temperature <= 0:
        raise ValueError(f"DWA needs period >= 1 and temperature > 0, got {period}, {temperature}")
    return _dwa(int(period), float(temperature))


@functools.lru_cache(maxsize=64)
def _dwa(period: int, temperature: float) -> Method:
    def init(num_tasks: int) -> DWAState:
        zeros = lambda: jnp.zeros((num_tasks,), jnp.float32)  # noqa: E731 - distinct buffers (donation)
        return DWAState(zeros(), jnp.zeros((), jnp.int32), zeros(), zeros(), jnp.zeros((), jnp.int32))

    def update(info, state: DWAState, key):
        losses = info.losses
        del key
        rolled = DWAState(jnp.zeros_like(state.running_sum), jnp.zeros((), jnp.int32),
                          state.running_sum / jnp.maximum(state.count, 1), state.last, state.epochs + 1)
        state = jax.tree.map(lambda r, s: jnp.where(state.count == period, r, s), rolled, state)
        num_tasks = losses.shape[0]
        ratio = state.last / jnp.where(state.before_last > 0, state.before_last, 1.0)
        dynamic = num_tasks * jax.nn.softmax(ratio / temperature)
        weights = jnp.where(state.epochs >= 2, dynamic, jnp.ones_like(losses))
        return weights, state._replace(running_sum=state.running_sum + losses, count=state.count + 1)

    return Method(init, update)


@WEIGHTINGS.register("dwa", "dynamic weight average (Liu et al. 2019): more weight to tasks whose epoch loss "
                            "falls slowest; cheap, no gradients")
def from_tasks(tasks: Sequence[Task], steps_per_epoch: int, temperature: float = 2.0) -> Method:
    del tasks
    return dwa(steps_per_epoch, temperature)
