"""UPGrad and DualProj: projections onto the dual cone of the task gradients (Quinton & Rey 2024).

The dual cone is ``{d : <d, g_j> >= 0 for all j}``: directions that conflict with no task.
Projecting ``sum_i u_i g_i`` onto it amounts, in the coefficients, to the quadratic program

    v*(u) = argmin_{v >= u} v^T G v,      d = sum_i v*_i g_i,

whose optimality conditions give ``G v* >= 0``, i.e. ``<d, g_j> >= 0`` for every task.

* UPGrad projects every task gradient ``g_i`` (``u = e_i``) and averages:
  ``c = (1/T) sum_i v*(e_i)``; non-conflicting, and equal to the mean when nothing conflicts.
* DualProj projects the mean gradient (``u = 1/T``): ``c = v*(1/T)``.

The programs are solved exactly by an active-set method (:mod:`mtl_jax.aggregation.qp`),
whatever the conditioning of ``G``; the certificate is the worst relative KKT residual,
``max_j max(-<d, g_j>, 0) / (|G| |v|)_j`` and the stationarity on the support, so a residual
below tolerance states that the direction conflicts with no task. (torchjd solves the same
programs on ``G / tr(G) + 1e-4 I``, which lets its direction conflict with a task when
``G`` is badly conditioned.)

Absent tasks (zero gradients, see :mod:`mtl_jax.balancing`) add no constraint (``<d, 0> >= 0``)
and are neither projected nor averaged: the mean is over the present tasks.

Cost: ``T`` (UPGrad) or one (DualProj) active-set solves on the ``T x T`` Gramian, each a
few eigendecompositions of a ``(T + 1) x (T + 1)`` matrix.

References: P. Quinton, V. Rey. "Jacobian Descent for Multi-Objective Optimization",
arXiv:2406.16232, 2024 (torchjd).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from mtl_jax.balancing import Method
from mtl_jax.caching import by_value
from mtl_jax.aggregation.certificate import Certificate, certified, issue
from mtl_jax.aggregation.qp import min_norm_above, tolerance
from mtl_jax.registry import AGGREGATORS


def _present(gramian, present):
    return jnp.ones(gramian.shape[:1], bool) if present is None else present


def upgrad_solve(gramian, present=None) -> tuple[jax.Array, Certificate]:
    present = _present(gramian, present)
    weight = present.astype(gramian.dtype) / jnp.maximum(jnp.sum(present), 1)
    projections = jax.vmap(lambda lower: min_norm_above(gramian, lower))(jnp.diag(present.astype(gramian.dtype)))
    residual = jnp.max(jnp.where(present, projections.residual, 0.0))
    return jnp.where(present, weight @ projections.x, 0.0), issue("upgrad", residual, tolerance(gramian.dtype))


def dualproj_solve(gramian, present=None) -> tuple[jax.Array, Certificate]:
    present = _present(gramian, present)
    mean = present.astype(gramian.dtype) / jnp.maximum(jnp.sum(present), 1)
    solution = min_norm_above(gramian, mean)
    return jnp.where(present, solution.x, 0.0), issue("dualproj", solution.residual, tolerance(gramian.dtype))


def upgrad_coefficients(gramian, present=None):
    return upgrad_solve(gramian, present)[0]


def dualproj_coefficients(gramian, present=None):
    return dualproj_solve(gramian, present)[0]


@AGGREGATORS.register("upgrad", "UPGrad (Quinton & Rey 2024): average of each gradient projected onto the "
                                "dual cone; never conflicts, equals the mean when nothing conflicts")
@by_value
def upgrad() -> Method:
    return certified("upgrad", lambda gramian, key, present: upgrad_solve(gramian, present))


@AGGREGATORS.register("dualproj", "DualProj (Quinton & Rey 2024): the mean gradient projected onto the dual "
                                  "cone")
@by_value
def dualproj() -> Method:
    return certified("dualproj", lambda gramian, key, present: dualproj_solve(gramian, present))
