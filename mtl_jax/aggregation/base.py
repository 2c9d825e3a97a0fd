"""The shape of a gradient-aggregation method, and how it composes with loss weighting.

Most aggregators map the ``T x T`` Gramian ``G_ij = <g_i, g_j>`` of the tasks' gradients to
coefficients ``c``: the update direction is ``d = sum_i c_i g_i``. MGDA, PCGrad, CAGrad,
Nash-MTL, IMTL-G, GradVac, Aligned-MTL, UPGrad, DualProj, ConFIG, mean and sum are all such
functions of the Gramian, so they never need the gradient vectors themselves:

    init(num_tasks) -> state,      update(gramian, state, key) -> (coefficients, state)

A :class:`JacobianAggregator` acts on each coordinate (GradDrop) and needs the per-task
gradients themselves; it exists at the feature level, where they are ``dL_i/dz``:

    init(num_tasks) -> state,      update(jacobian [T, ...], state, key) -> (direction, state)

:func:`aggregated` composes a loss-weighting method ``w`` with an aggregator: the
aggregator sees the *weighted* gradients ``w_i g_i`` (Gramian ``G^w = G * w w^T``) and the
step follows ``sum_i c_i w_i g_i``, i.e. the gradient of ``sum_i (c_i w_i) L_i``. The
result is a :class:`~mtl_jax.weighting.base.Weighting` fed the Gramian at ``level``:
``"feature"`` (gradients w.r.t. the shared representation, as in MGDA-UB; about one EW
step) or ``"parameter"`` (exact, w.r.t. all shared parameters). See
:mod:`mtl_jax.train.task_gradients`.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from mtl_jax.weighting.base import Weighting, at_level


class Aggregator(NamedTuple):
    init: Callable[[int], Any]
    update: Callable[[jax.Array, Any, jax.Array], tuple[jax.Array, Any]]


class JacobianAggregator(NamedTuple):
    init: Callable[[int], Any]
    update: Callable[[Any, Any, jax.Array], tuple[Any, Any]]


def _gramian_of(jacobian) -> jax.Array:
    return sum(f @ f.T for f in (leaf.reshape(leaf.shape[0], -1) for leaf in jax.tree.leaves(jacobian)))


@functools.lru_cache(maxsize=128)
def aggregated(weighting: Weighting, aggregator: Aggregator | JacobianAggregator, level: str = "feature") -> Weighting:
    """Loss weights first, then aggregation of the weighted gradients (see the module doc)."""
    if weighting.needs == "feature_jacobian":
        raise ValueError("a Jacobian-level method cannot be followed by an aggregator")
    wants_gramian = weighting.needs.endswith("_gramian")

    def init(num_tasks: int):
        return weighting.init(num_tasks), aggregator.init(num_tasks)

    if isinstance(aggregator, JacobianAggregator):
        def update_jacobian(losses, state, key, jacobian):
            weight_key, aggregate_key = jax.random.split(key)
            extra = (_gramian_of(jacobian),) if wants_gramian else ()
            weights, weighting_state = weighting.update(losses, state[0], weight_key, *extra)
            weighted = jax.tree.map(lambda leaf: leaf * weights.reshape((-1,) + (1,) * (leaf.ndim - 1)), jacobian)
            direction, aggregator_state = aggregator.update(weighted, state[1], aggregate_key)
            return weights, (weighting_state, aggregator_state), direction

        return at_level(Weighting(init, update_jacobian, needs="feature_jacobian"), level)

    def update(losses, state, key, gramian):
        weight_key, aggregate_key = jax.random.split(key)
        extra = (gramian,) if wants_gramian else ()
        weights, weighting_state = weighting.update(losses, state[0], weight_key, *extra)
        coefficients, aggregator_state = aggregator.update(gramian * jnp.outer(weights, weights), state[1],
                                                           aggregate_key)
        return coefficients * weights, (weighting_state, aggregator_state)

    return at_level(Weighting(init, update, needs="feature_gramian"), level)


def stateless(coefficients: Callable[[jax.Array, jax.Array], jax.Array]) -> Aggregator:
    """An aggregator without state from ``coefficients(gramian, key)``."""
    return Aggregator(lambda num_tasks: (), lambda gramian, state, key: (coefficients(gramian, key), state))
