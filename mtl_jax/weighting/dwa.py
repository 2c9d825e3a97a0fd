"""Dynamic Weight Average, DWA (Liu, Johns & Davison 2019).

With ``L_i(e)`` task i's mean training loss over epoch ``e`` and temperature ``T_temp``,

    r_i(e-1) = L_i(e-1) / L_i(e-2),     w_i(e) = T exp(r_i(e-1) / T_temp) / sum_j exp(r_j(e-1) / T_temp)

so the weights sum to ``T`` and a task whose loss fell least over the last epoch gets more
weight; ``w_i = 1`` for the first two epochs. The state averages the losses of the running
epoch (``period`` steps, the runner's steps per epoch) and keeps the last two epoch means.
A task's epoch mean is over the steps it was present in (see :mod:`mtl_jax.balancing`); a task
absent for a whole epoch keeps its last two means, and the softmax and its ``T`` are over the
present tasks.

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
from mtl_jax.balancing import Method, among_present, count_present, present_of, softmax_among


class DWAState(NamedTuple):
    running_sum: jax.Array   # [T] losses summed over the running epoch
    count: jax.Array         # steps in the running epoch
    last: jax.Array          # [T] mean loss of the last complete epoch
    before_last: jax.Array   # [T] mean loss of the epoch before it
    epochs: jax.Array        # complete epochs seen
    seen: jax.Array          # [T] steps of the running epoch in which each task was present


def dwa(period: int, temperature: float = 2.0) -> Method:
    """DWA over epochs of ``period`` steps."""
    if period < 1 or temperature <= 0:
        raise ValueError(f"DWA needs period >= 1 and temperature > 0, got {period}, {temperature}")
    return _dwa(int(period), float(temperature))


@functools.lru_cache(maxsize=64)
def _dwa(period: int, temperature: float) -> Method:
    def init(num_tasks: int) -> DWAState:
        zeros = lambda: jnp.zeros((num_tasks,), jnp.float32)  # noqa: E731 - distinct buffers (donation)
        return DWAState(zeros(), jnp.zeros((), jnp.int32), zeros(), zeros(), jnp.zeros((), jnp.int32), zeros())

    def update(info, state: DWAState, key):
        losses = info.losses
        del key
        present = present_of(info)
        had = state.seen > 0  # the task was present in the epoch that ends
        rolled = DWAState(jnp.zeros_like(state.running_sum), jnp.zeros((), jnp.int32),
                          jnp.where(had, state.running_sum / jnp.maximum(state.seen, 1.0), state.last),
                          jnp.where(had, state.last, state.before_last), state.epochs + 1,
                          jnp.zeros_like(state.seen))
        state = jax.tree.map(lambda r, s: jnp.where(state.count == period, r, s), rolled, state)
        ratio = state.last / jnp.where(state.before_last > 0, state.before_last, 1.0)
        dynamic = count_present(present) * softmax_among(ratio / temperature, present)
        weights = among_present(jnp.where(state.epochs >= 2, dynamic, jnp.ones_like(losses)), present)
        return weights, state._replace(running_sum=state.running_sum + among_present(losses, present),
                                       count=state.count + 1, seen=state.seen + present)

    return Method(init, update)


@WEIGHTINGS.register("dwa", "dynamic weight average (Liu et al. 2019): more weight to tasks whose epoch loss "
                            "falls slowest; cheap, no gradients")
def from_tasks(tasks: Sequence[Task], steps_per_epoch: int, temperature: float = 2.0) -> Method:
    del tasks
    return dwa(steps_per_epoch, temperature)
