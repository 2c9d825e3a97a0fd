"""UPGrad and DualProj: projections onto the dual cone of the task gradients (Quinton & Rey 2024).

The dual cone is ``{d : <d, g_j> >= 0 for all j}``: directions that conflict with no task.
Projecting ``sum_i u_i g_i`` onto it amounts, in the coefficients, to the quadratic program

    v*(u) = argmin_{v >= u} v^T G v,      d = sum_i v*_i g_i,

whose optimality conditions give ``G v* >= 0``, i.e. ``<d, g_j> >= 0`` for every task.

* UPGrad projects every task gradient ``g_i`` (``u = e_i``) and averages:
  ``c = (1/T) sum_i v*(e_i)``; non-conflicting, and equal to the mean when nothing conflicts.
* DualProj projects the mean gradient (``u = 1/T``): ``c = v*(1/T)``.

References: P. Quinton, V. Rey. "Jacobian Descent for Multi-Objective Optimization",
arXiv:2406.16232, 2024 (torchjd).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from mtl_jax.aggregation.base import Aggregator, stateless
from mtl_jax.aggregation.qp import min_norm_above
from mtl_jax.registry import AGGREGATORS


def upgrad_coefficients(gramian):
    n = gramian.shape[0]
    projections = jax.vmap(lambda lower: min_norm_above(gramian, lower))(jnp.eye(n, dtype=gramian.dtype))
    return jnp.mean(projections, axis=0)


def dualproj_coefficients(gramian):
    n = gramian.shape[0]
    return min_norm_above(gramian, jnp.full((n,), 1.0 / n, gramian.dtype))


@AGGREGATORS.register("upgrad", "UPGrad (Quinton & Rey 2024): average of each gradient projected onto the "
                                "dual cone; never conflicts, equals the mean when nothing conflicts")
@functools.lru_cache(maxsize=1)
def upgrad() -> Aggregator:
    return stateless(lambda gramian, key: upgrad_coefficients(gramian))


@AGGREGATORS.register("dualproj", "DualProj (Quinton & Rey 2024): the mean gradient projected onto the dual "
                                  "cone")
@functools.lru_cache(maxsize=1)
def dualproj() -> Aggregator:
    return stateless(lambda gramian, key: dualproj_coefficients(gramian))
