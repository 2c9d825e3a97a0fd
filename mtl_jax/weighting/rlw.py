"""Random Loss Method, RLW (Lin et al. 2022).

Every step draws ``lambda ~ N(0, I_T)`` from the step's PRNG key and uses

    w = T softmax(lambda),

weights that sum to ``T`` (the scale of equal weighting) and differ every step. Being a
function of the step key, a run is reproducible and resumes exactly.

References: B. Lin, F. Ye, Y. Zhang, I. W. Tsang. "Reasonable Effectiveness of Random
Method: A Litmus Test for Multi-Task Learning", TMLR 2022.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from mtl_jax.registry import WEIGHTINGS
from mtl_jax.tasks import Task
from mtl_jax.balancing import Method, count_present, present_of, softmax_among
from mtl_jax.caching import by_value


@by_value
def random_weighting() -> Method:
    def init(num_tasks: int):
        return ()

    def update(info, state, key):
        losses = info.losses
        present = present_of(info)  # the present tasks share the weight
        draw = jax.random.normal(key, losses.shape, jnp.float32)
        return count_present(present) * softmax_among(draw, present), state

    return Method(init, update)


@WEIGHTINGS.register("random_weighting", "random loss weighting (Lin et al. 2022): T softmax(N(0, I)) each step; the baseline "
                            "any method should beat", aliases=("rlw",))
def from_tasks(tasks: Sequence[Task]) -> Method:
    del tasks
    return random_weighting()
