"""MGDA: the min-norm point of the convex hull of the task gradients (Sener & Koltun 2018).

    c* = argmin_{c >= 0, sum c = 1} || sum_i c_i g_i ||^2 = argmin c^T G c,   d = sum_i c*_i g_i.

``d`` is the steepest common descent direction: ``<d, g_i> >= ||d||^2`` for every task (KKT
conditions), and ``d = 0`` exactly at a Pareto-stationary point. Absent tasks (see
:mod:`mtl_jax.balancing`) are not part of the hull: their zero gradient would make ``d = 0``. Two tasks have the closed
form ``c_1 = clip(<g_2 - g_1, g_2> / ||g_1 - g_2||^2, 0, 1)``; more are solved exactly by
Wolfe's min-norm-point active-set method (:mod:`mtl_jax.aggregation.qp`), whatever the
conditioning, with the relative KKT residual as certificate. (torchjd and LibMTL stop a
Frank-Wolfe iteration after a fixed step size or count.) With gradients at the shared
representation this is MGDA-UB, the paper's efficient upper-bound variant.

References: O. Sener, V. Koltun. "Multi-Task Learning as Multi-Objective Optimization",
NeurIPS 2018. J.-A. Desideri. "Multiple-gradient descent algorithm (MGDA) for
multiobjective optimization", 2012.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from mtl_jax.balancing import Method
from mtl_jax.caching import by_value
from mtl_jax.aggregation.certificate import Certificate, certified, issue
from mtl_jax.aggregation.qp import min_norm_in_simplex, tolerance
from mtl_jax.registry import AGGREGATORS


def mgda_solve(gramian, present=None) -> tuple[jax.Array, Certificate]:
    """The min-norm coefficients over the simplex of the ``present`` tasks (default: all)."""
    if gramian.shape[0] == 2:
        difference = gramian[0, 0] - 2 * gramian[0, 1] + gramian[1, 1]
        first = jnp.clip((gramian[1, 1] - gramian[0, 1]) / jnp.maximum(difference, 1e-30), 0.0, 1.0)
        first = jnp.where(difference > 1e-30, first, 0.5)
        coefficients = jnp.stack([first, 1 - first])
        if present is not None:  # one task alone: its own gradient (none: 0)
            coefficients = jnp.where(present[0] & present[1], coefficients, present.astype(first.dtype))
        return coefficients, issue("mgda", 0.0, tolerance(gramian.dtype))
    solution = min_norm_in_simplex(gramian, present)
    x = solution.x if present is None else jnp.where(present, solution.x, 0.0)  # none present: 0
    return x, issue("mgda", solution.residual, tolerance(gramian.dtype))


def mgda_coefficients(gramian, present=None):
    return mgda_solve(gramian, present)[0]


@AGGREGATORS.register("mgda", "MGDA (Sener & Koltun 2018): min-norm point of the gradients' convex hull, a "
                              "common descent direction")
@by_value
def mgda() -> Method:
    return certified("mgda", lambda gramian, key, present: mgda_solve(gramian, present))
