"""CAGrad: conflict-averse gradient descent (Liu, Liu, Jin, Stone & Liu 2021).

Within a ball around the mean gradient ``g_0 = (1/T) sum_i g_i``, take the direction that
most improves the worst task:

    max_d min_i <g_i, d>   s.t.  ||d - g_0|| <= c ||g_0||.

Its dual is a small problem over the simplex: with ``g_w = sum_i w_i g_i`` and
``r = c ||g_0||``,

    w* = argmin_{w in simplex}  F(w) = <g_w, g_0> + r ||g_w||,
    d  = g_0 + r / ||g_w*|| g_w*,

every term of which is read from the Gramian (``<g_w, g_0> = w^T G 1 / T``,
``||g_w||^2 = w^T G w``). ``F`` is convex but not smooth, so it is minimised exactly through
``sqrt(a) = min_t (a / t + t) / 2``: for fixed ``t`` the minimiser over ``w`` is a simplex
QP, solved exactly by the active-set method of :mod:`mtl_jax.aggregation.qp` (warm-started),
and the best ``t`` is where ``t = ||g_w(t)||``, found by bisection on ``log t`` (the outer
function is convex, so the sign of ``t^2 - ||g_w(t)||^2`` changes once).

The certificate is the duality gap: any ``w`` in the simplex bounds the primal optimum from
above by ``F(w)``, and the returned ``d`` (on the ball's boundary) from below by ``min_i <g_i,
d>``; their difference relative to ``|F(w)| + r ||g_w||`` is zero only at the optimum of
both problems. ``c = 0`` gives the mean; larger ``c`` moves towards MGDA. As in the authors'
code, ``rescale=1`` divides ``d`` by ``1 + c^2`` (0: no rescaling; 2: by ``1 + c``).

References: B. Liu, X. Liu, X. Jin, P. Stone, Q. Liu. "Conflict-Averse Gradient Descent for
Multi-task Learning", NeurIPS 2021.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from mtl_jax.aggregation.base import Aggregator
from mtl_jax.aggregation.certificate import Certificate, certified, issue
from mtl_jax.aggregation.qp import solve_simplex, tolerance
from mtl_jax.registry import AGGREGATORS


def _bisection_steps(dtype) -> int:
    return 64 if jnp.finfo(dtype).bits >= 64 else 48


def cagrad_solve(gramian, c: float = 0.4, rescale: int = 1) -> tuple[jax.Array, Certificate]:
    n = gramian.shape[0]
    dtype = gramian.dtype
    gramian = (gramian + gramian.T) / 2
    mean = jnp.full((n,), 1.0 / n, dtype)
    if c == 0:
        return mean, issue("cagrad", 0.0, tolerance(dtype))
    mean_dots = gramian @ mean  # <g_i, g_0>
    mean_norm = jnp.sqrt(jnp.maximum(mean @ mean_dots, 0.0))
    radius = c * mean_norm
    tiny = jnp.finfo(dtype).tiny
    top = jnp.sqrt(jnp.maximum(jnp.max(jnp.diagonal(gramian)), tiny))  # ||g_w|| <= max_i ||g_i||
    low = top * 1e-15

    def weights(t, start):
        # argmin_w <g_w, g_0> + r ||g_w||^2 / (2 t), i.e. 1/2 w^T G w - b^T w with b = -(t / r) G 1/T.
        return solve_simplex(gramian, -(t / jnp.maximum(radius, tiny)) * mean_dots, start).x

    def bisect(_, carry):
        lo, hi, w = carry  # bounds on log t
        t = jnp.exp((lo + hi) / 2)
        w = weights(t, w)
        above = t * t >= w @ gramian @ w  # the optimal t is below
        return jnp.where(above, lo, (lo + hi) / 2), jnp.where(above, (lo + hi) / 2, hi), w

    start = weights(top, None)
    lo, hi, w = jax.lax.fori_loop(0, _bisection_steps(dtype), bisect, (jnp.log(low), jnp.log(top), start))
    w = weights(jnp.exp(hi), w)
    w_norm = jnp.sqrt(jnp.maximum(w @ gramian @ w, 0.0))
    step = jnp.where(w_norm > tiny, radius / jnp.maximum(w_norm, tiny), 0.0)
    coefficients = mean + step * w
    # Duality gap: F(w) bounds the optimum from above, min_i <g_i, d> from below.
    dual = w @ mean_dots + radius * w_norm
    primal = jnp.min(gramian @ coefficients)
    scale = jnp.maximum(jnp.abs(w @ mean_dots) + radius * w_norm + jnp.abs(primal), tiny)
    gap = jnp.where(mean_norm > tiny, jnp.maximum(dual - primal, 0.0) / scale, 0.0)
    divisor = {0: 1.0, 1: 1.0 + c ** 2, 2: 1.0 + c}[rescale]
    return coefficients / divisor, issue("cagrad", gap, 10 * tolerance(dtype))


def cagrad_coefficients(gramian, c: float = 0.4, rescale: int = 1):
    return cagrad_solve(gramian, c, rescale)[0]


@AGGREGATORS.register("cagrad", "CAGrad (Liu et al. 2021), c: best worst-task improvement within a ball of radius "
                                "c ||mean|| around the mean gradient")
@functools.lru_cache(maxsize=16)
def cagrad(c: float = 0.4, rescale: int = 1) -> Aggregator:
    if c < 0:
        raise ValueError(f"CAGrad's c must be >= 0, got {c}")
    if rescale not in (0, 1, 2):
        raise ValueError(f"CAGrad's rescale must be 0, 1 or 2, got {rescale}")
    return certified("cagrad", lambda gramian, key: cagrad_solve(gramian, float(c), int(rescale)))
