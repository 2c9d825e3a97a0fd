"""The shape of a loss-weighting method: an optax-like pair of pure functions.

``init(num_tasks) -> state`` and ``update(losses, state, key) -> (weights, state)``,
where ``losses`` is the ``[T]`` vector of this step's per-task losses (in task order,
gradients stopped), ``key`` is this step's PRNG key, and ``weights`` is ``[T]``. The
train step minimises ``sum_i weights_i * L_i`` with the weights held constant, and
keeps ``state`` in the train state so it is checkpointed and sharded with the rest.

A method that also needs gradient information declares it in ``needs``:

* ``"feature_gramian"``: ``update(losses, state, key, gramian)`` also receives the
  ``T x T`` Gramian ``G_ij = <dL_i/dz, dL_j/dz>`` of the tasks' gradients with respect to
  the shared representation ``z`` (MGDA-UB's feature level; ``sqrt(diag G)`` are the
  gradient norms). The step gets every task's ``dL_i/dz`` from one backward pass through
  the heads (each head reads its own copy of ``z``), then back-propagates
  ``sum_i w_i dL_i/dz`` through the trunk once: about the cost of an EW step.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax

WeightingState = Any


NEEDS = ("losses", "feature_gramian")


class Weighting(NamedTuple):
    init: Callable[[int], WeightingState]
    update: Callable[..., tuple[jax.Array, WeightingState]]
    needs: str = "losses"
