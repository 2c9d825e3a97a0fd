"""The shape of a loss-weighting method: an optax-like pair of pure functions.

``init(num_tasks) -> state`` and ``update(losses, state, key) -> (weights, state)``,
where ``losses`` is the ``[T]`` vector of this step's per-task losses (in task order,
gradients stopped), ``key`` is this step's PRNG key, and ``weights`` is ``[T]``. The
train step minimises ``sum_i weights_i * L_i`` with the weights held constant, and
keeps ``state`` in the train state so it is checkpointed and sharded with the rest.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax

WeightingState = Any


class Weighting(NamedTuple):
    init: Callable[[int], WeightingState]
    update: Callable[[jax.Array, WeightingState, jax.Array], tuple[jax.Array, WeightingState]]
