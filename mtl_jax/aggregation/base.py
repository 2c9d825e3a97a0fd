"""The shape of a gradient-aggregation method, and how it composes with loss weighting.

An aggregator maps the ``T x T`` Gramian ``G_ij = <g_i, g_j>`` of the tasks' gradients to
coefficients ``c``: the update direction is ``d = sum_i c_i g_i``. Every method here
(MGDA, PCGrad, IMTL-G, UPGrad, DualProj, mean, sum) is exactly such a function of the
Gramian, so it never needs the gradient vectors themselves:

    init(num_tasks) -> state,      update(gramian, state, key) -> (coefficients, state)

:func:`aggregated` composes a loss-weighting method ``w`` with an aggregator: the
aggregator sees the Gramian of the *weighted* gradients ``w_i g_i``
(``G^w = G * w w^T``) and the step follows ``sum_i c_i w_i g_i``, i.e. the gradient of
``sum_i (c_i w_i) L_i``. The result is a :class:`~mtl_jax.weighting.base.Weighting` with
``needs="feature_gramian"``: gradients are taken at the shared representation (the
feature level of MGDA-UB, about one EW step; see :mod:`mtl_jax.train.feature_grads`).
"""
from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from mtl_jax.weighting.base import Weighting


class Aggregator(NamedTuple):
    init: Callable[[int], Any]
    update: Callable[[jax.Array, Any, jax.Array], tuple[jax.Array, Any]]


@functools.lru_cache(maxsize=128)
def aggregated(weighting: Weighting, aggregator: Aggregator) -> Weighting:
    """Loss weights first, then aggregation of the weighted gradients (see the module doc)."""

    def init(num_tasks: int):
        return weighting.init(num_tasks), aggregator.init(num_tasks)

    def update(losses, state, key, gramian):
        weight_key, aggregate_key = jax.random.split(key)
        extra = (gramian,) if weighting.needs == "feature_gramian" else ()
        weights, weighting_state = weighting.update(losses, state[0], weight_key, *extra)
        coefficients, aggregator_state = aggregator.update(gramian * jnp.outer(weights, weights), state[1],
                                                           aggregate_key)
        return coefficients * weights, (weighting_state, aggregator_state)

    return Weighting(init, update, needs="feature_gramian")


def stateless(coefficients: Callable[[jax.Array, jax.Array], jax.Array]) -> Aggregator:
    """An aggregator without state from ``coefficients(gramian, key)``."""
    return Aggregator(lambda num_tasks: (), lambda gramian, state, key: (coefficients(gramian, key), state))
