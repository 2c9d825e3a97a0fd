"""Static weighting: the fixed lambdas of ``L = sum_i lambda_i L_i``.

The plain multi-task objective (e.g. the seed's ``mse + 0.5 * ce``). With every
lambda equal to 1 it is equal weighting (EW), plain summed-loss training. Cost: none
beyond one backward pass of the weighted sum. Stateless.
"""
from __future__ import annotations

import functools
from typing import Sequence

import jax.numpy as jnp

from mtl_jax.registry import WEIGHTINGS
from mtl_jax.tasks import Task
from mtl_jax.balancing import Method, among_present, present_of


def static(lambdas: Sequence[float]) -> Method:
    """Constant weights ``lambdas`` (one per task, in task order).

    Equal lambdas give the same :class:`Method` object, so compiled steps are reused.
    """
    return _static(tuple(float(w) for w in lambdas))


@functools.lru_cache(maxsize=128)
def _static(lambdas: tuple[float, ...]) -> Method:
    weights = jnp.asarray(lambdas, jnp.float32)

    def init(num_tasks: int):
        if num_tasks != weights.shape[0]:
            raise ValueError(f"static weighting has {weights.shape[0]} lambdas for {num_tasks} tasks")
        return ()

    def update(info, state, key):
        losses = info.losses
        del key
        return among_present(jnp.broadcast_to(weights, losses.shape), present_of(info)), state

    return Method(init, update)


@WEIGHTINGS.register("static", "the tasks' own lambdas (Task.weight): L = sum_i lambda_i L_i")
def from_tasks(tasks: Sequence[Task]) -> Method:
    return static([t.weight for t in tasks])


@WEIGHTINGS.register("equal", "equal weights (EW): every lambda is 1, plain summed-loss training", aliases=("ew",))
def equal(tasks: Sequence[Task]) -> Method:
    return static([1.0] * len(tasks))
