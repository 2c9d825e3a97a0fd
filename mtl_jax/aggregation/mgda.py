"""MGDA: the min-norm point of the convex hull of the task gradients (Sener & Koltun 2018).

    c* = argmin_{c >= 0, sum c = 1} || sum_i c_i g_i ||^2 = argmin c^T G c,   d = sum_i c*_i g_i.

``d`` is the steepest common descent direction: ``<d, g_i> >= ||d||^2`` for every task (KKT
conditions), and ``d = 0`` exactly at a Pareto-stationary point. Two tasks have the closed
form ``c_1 = clip(<g_2 - g_1, g_2> / ||g_1 - g_2||^2, 0, 1)``; more are solved by FISTA on
the simplex (:mod:`mtl_jax.aggregation.qp`). With gradients at the shared representation
this is MGDA-UB, the paper's efficient upper-bound variant.

References: O. Sener, V. Koltun. "Multi-Task Learning as Multi-Objective Optimization",
NeurIPS 2018. J.-A. Desideri. "Multiple-gradient descent algorithm (MGDA) for
multiobjective optimization", 2012.
"""
from __future__ import annotations

import functools

import jax.numpy as jnp

from mtl_jax.aggregation.base import Aggregator, stateless
from mtl_jax.aggregation.qp import min_norm_in_simplex
from mtl_jax.registry import AGGREGATORS


def mgda_coefficients(gramian):
    if gramian.shape[0] == 2:
        difference = gramian[0, 0] - 2 * gramian[0, 1] + gramian[1, 1]
        first = jnp.clip((gramian[1, 1] - gramian[0, 1]) / jnp.maximum(difference, 1e-30), 0.0, 1.0)
        first = jnp.where(difference > 1e-30, first, 0.5)
        return jnp.stack([first, 1 - first])
    return min_norm_in_simplex(gramian)


@AGGREGATORS.register("mgda", "MGDA (Sener & Koltun 2018): min-norm point of the gradients' convex hull, a "
                              "common descent direction")
@functools.lru_cache(maxsize=1)
def mgda() -> Aggregator:
    return stateless(lambda gramian, key: mgda_coefficients(gramian))
