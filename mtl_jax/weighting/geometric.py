"""Geometric loss strategy, GLS (Chennupati et al. 2019).

The objective is the geometric mean of the task losses, ``L = (prod_i L_i)^{1/T}``. Its
gradient is ``sum_i L / (T L_i) grad L_i``, so the step's weights are

    w_i = (prod_j L_j)^{1/T} / (T L_i)      (losses gradient-stopped, floored at eps)

and ``sum_i w_i grad L_i`` equals the gradient of the geometric mean exactly. Scale-free
across tasks: multiplying one task's loss by ``c`` multiplies the whole gradient by
``c^{1/T}`` and leaves its direction unchanged.

References: S. Chennupati, G. Sistu, S. Yogamani, S. A. Rawashdeh. "MultiNet++: Multi-Stream
Feature Aggregation and Geometric Loss Strategy for Multi-Task Learning", CVPR Workshops 2019.
"""
from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp

from mtl_jax.registry import WEIGHTINGS
from mtl_jax.tasks import Task
from mtl_jax.balancing import Method, among_present, count_present, mean_among, present_of
from mtl_jax.caching import by_value


@by_value
def geometric(eps: float = 1e-8) -> Method:
    def init(num_tasks: int):
        return ()

    def update(info, state, key):
        losses = info.losses
        del key
        present = present_of(info)  # the geometric mean of the present tasks' losses
        safe = jnp.maximum(losses, eps)
        mean = jnp.exp(mean_among(jnp.log(safe), present))
        return among_present(mean / (count_present(present) * safe), present), state

    return Method(init, update)


@WEIGHTINGS.register("geometric", "geometric mean of the losses (Chennupati et al. 2019): scale-free across tasks",
                     aliases=("gls",))
def from_tasks(tasks: Sequence[Task], eps: float = 1e-8) -> Method:
    del tasks
    return geometric(float(eps))
