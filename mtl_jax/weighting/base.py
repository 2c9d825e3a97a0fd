"""The shape of a loss-weighting method: an optax-like pair of pure functions.

``init(num_tasks) -> state`` and ``update(losses, state, key) -> (weights, state)``,
where ``losses`` is the ``[T]`` vector of this step's per-task losses (in task order,
gradients stopped), ``key`` is this step's PRNG key, and ``weights`` is ``[T]``. The
train step minimises ``sum_i weights_i * L_i`` with the weights held constant, and
keeps ``state`` in the train state so it is checkpointed and sharded with the rest.

A method that also needs gradient information declares it in ``needs`` (see
:mod:`mtl_jax.train.task_gradients`):

* ``"feature_gramian"``: ``update(losses, state, key, gramian)`` also receives the
  ``T x T`` Gramian ``G_ij = <dL_i/dz, dL_j/dz>`` of the tasks' gradients with respect to
  the shared representation ``z`` (MGDA-UB's feature level; ``sqrt(diag G)`` are the
  gradient norms). The step gets every task's ``dL_i/dz`` from one backward pass through
  the heads (each head reads its own copy of ``z``), then back-propagates
  ``sum_i w_i dL_i/dz`` through the trunk once: about the cost of an EW step.
* ``"parameter_gramian"``: the same signature, with the exact Gramian of the gradients
  w.r.t. all shared parameters (about ``1 + T/3`` EW steps). :func:`at_level` moves any
  Gramian method between the two levels.
* ``"feature_jacobian"``: ``update(losses, state, key, jacobian) -> (weights, state,
  cotangent)`` receives the stacked ``dL_i/dz`` (``[T, *z.shape]``) and returns the
  cotangent to back-propagate through the trunk (per-coordinate methods: GradDrop).
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax

WeightingState = Any


NEEDS = ("losses", "feature_gramian", "parameter_gramian", "feature_jacobian")
LEVELS = ("feature", "parameter")


class Weighting(NamedTuple):
    init: Callable[[int], WeightingState]
    update: Callable[..., tuple[jax.Array, WeightingState]]
    needs: str = "losses"


def at_level(weighting: Weighting, level: str) -> Weighting:
    """The same method fed the Gramian at ``level`` (``"feature"`` or ``"parameter"``).

    Loss-only methods are returned unchanged; a Jacobian-level method only exists at the
    feature level and asking for the parameter level is an error.
    """
    if level not in LEVELS:
        raise ValueError(f"unknown gradient level {level!r}; expected one of {LEVELS}")
    if weighting.needs in ("feature_gramian", "parameter_gramian"):
        return weighting._replace(needs=f"{level}_gramian")
    if weighting.needs == "feature_jacobian" and level != "feature":
        raise ValueError("this method acts on each coordinate of the per-task gradients at the shared "
                         "representation and exists only at gradient_level='feature'")
    return weighting


def observed(weighting: Weighting, level: str) -> Weighting:
    """``weighting`` unchanged, but run by a step that forms the Gramian at ``level`` so that
    the task-gradient similarities can be logged (``gradient_diagnostics``)."""
    if weighting.needs != "losses":
        return weighting
    return at_level(Weighting(weighting.init, lambda losses, state, key, gramian: weighting.update(losses, state, key),
                              needs="feature_gramian"), level)
