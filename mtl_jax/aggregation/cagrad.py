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
and the best ``t`` is where ``t = ||g_w(t)||``, found by regula falsi with the Illinois
modification on ``log t`` (the outer function is convex, so the sign of ``t^2 - ||g_w(t)||^2``
changes once), each QP warm-started from the previous one, until the duality gap below is
at the solver's tolerance.

The certificate is the duality gap: any ``w`` in the simplex bounds the primal optimum from
above by ``F(w)``, and the returned ``d`` (on the ball's boundary) from below by ``min_i <g_i,
d>``; their difference relative to ``|F(w)| + r ||g_w||`` is zero only at the optimum of
both problems. ``c = 0`` gives the mean; larger ``c`` moves towards MGDA. As in the authors'
code, ``rescale=1`` divides ``d`` by ``1 + c^2`` (0: no rescaling; 2: by ``1 + c``).

References: B. Liu, X. Liu, X. Jin, P. Stone, Q. Liu. "Conflict-Averse Gradient Descent for
Multi-task Learning", NeurIPS 2021. M. Dowell, P. Jarratt. "A modified regula falsi method for
computing the root of an equation", BIT 11, 1971 (Illinois).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mtl_jax.balancing import Method
from mtl_jax.caching import by_value
from mtl_jax.aggregation.certificate import Certificate, certified, issue
from mtl_jax.aggregation.qp import solve_simplex, tolerance
from mtl_jax.registry import AGGREGATORS


MAX_STEPS = 64  # outer steps; never the normal exit (the duality gap is)


def cagrad_solve(gramian, c: float = 0.4, rescale: int = 1, present=None) -> tuple[jax.Array, Certificate]:
    """``present``: the tasks in the step's batch (default all); the mean, the simplex and the
    worst task are theirs (see :mod:`mtl_jax.balancing`)."""
    n = gramian.shape[0]
    dtype = gramian.dtype
    gramian = (gramian + gramian.T) / 2
    present = jnp.ones((n,), bool) if present is None else present
    mean = present.astype(dtype) / jnp.maximum(jnp.sum(present), 1)
    if c == 0:
        return mean, issue("cagrad", 0.0, tolerance(dtype))
    mean_dots = gramian @ mean  # <g_i, g_0>
    mean_norm = jnp.sqrt(jnp.maximum(mean @ mean_dots, 0.0))
    radius = c * mean_norm
    tiny = jnp.finfo(dtype).tiny
    top = jnp.sqrt(jnp.maximum(jnp.max(jnp.diagonal(gramian)), tiny))  # ||g_w|| <= max_i ||g_i||
    divisor = {0: 1.0, 1: 1.0 + c ** 2, 2: 1.0 + c}[rescale]

    def weights(log_t, start):
        # argmin_w <g_w, g_0> + r ||g_w||^2 / (2 t), i.e. 1/2 w^T G w - b^T w with b = -(t / r) G 1/T.
        return solve_simplex(gramian, -(jnp.exp(log_t) / jnp.maximum(radius, tiny)) * mean_dots, start, present).x

    def evaluate(log_t, start):
        """``(w, h, d, gap)``: ``h = log(t^2 / ||g_w||^2)`` changes sign once, at the optimal ``t``;
        ``gap``: the relative duality gap of ``w`` and its direction ``d``."""
        w = weights(log_t, start)
        norm2 = jnp.maximum(w @ gramian @ w, 0.0)
        h = 2 * log_t - jnp.log(jnp.maximum(norm2, tiny))
        w_norm = jnp.sqrt(norm2)
        direction = mean + jnp.where(w_norm > tiny, radius / jnp.maximum(w_norm, tiny), 0.0) * w
        dual = w @ mean_dots + radius * w_norm  # F(w) bounds the optimum from above ...
        primal = jnp.min(jnp.where(present, gramian @ direction, jnp.inf))  # ... and min_i <g_i, d> from below
        scale = jnp.maximum(jnp.abs(w @ mean_dots) + radius * w_norm + jnp.abs(primal), tiny)
        gap = jnp.where(mean_norm > tiny, jnp.maximum(dual - primal, 0.0) / scale, 0.0)
        return w, h, direction, gap

    # Regula falsi on log t with the Illinois modification (Dowell & Jarratt 1971), bracketed
    # by [log(1e-15 max_i ||g_i||), log max_i ||g_i||]; it stops on the duality gap.
    lo, hi = jnp.log(top * 1e-15), jnp.log(top)
    w_hi, h_hi, d_hi, gap_hi = evaluate(hi, None)
    w_lo, h_lo, d_lo, gap_lo = evaluate(lo, w_hi)
    take_lo = gap_lo < gap_hi
    best = (jnp.where(take_lo, w_lo, w_hi), jnp.where(take_lo, d_lo, d_hi), jnp.minimum(gap_lo, gap_hi))
    target = tolerance(dtype)

    def keep_going(carry):
        (lo, hi, h_lo, h_hi, _, steps), (_, _, gap) = carry
        wide = hi - lo > 4 * jnp.finfo(dtype).eps * jnp.abs(hi)
        return (gap > target) & (steps < MAX_STEPS) & (h_lo < 0) & (h_hi > 0) & wide

    def step(carry):
        (lo, hi, h_lo, h_hi, side, steps), (w, d, gap) = carry
        point = (lo * h_hi - hi * h_lo) / (h_hi - h_lo)
        inside = jnp.isfinite(point) & (point > lo) & (point < hi)
        point = jnp.where(inside, point, (lo + hi) / 2)
        w_new, h, d_new, gap_new = evaluate(point, w)
        above = h >= 0  # the optimal t is below: point becomes the upper end
        # Illinois: an end kept twice in a row has its value halved, so the false position moves.
        h_lo_kept = jnp.where(side == 1, h_lo / 2, h_lo)
        h_hi_kept = jnp.where(side == -1, h_hi / 2, h_hi)
        lo, h_lo = jnp.where(above, lo, point), jnp.where(above, h_lo_kept, h)
        hi, h_hi = jnp.where(above, point, hi), jnp.where(above, h, h_hi_kept)
        side = jnp.where(above, 1, -1).astype(jnp.int32)
        better = gap_new <= gap
        return ((lo, hi, h_lo, h_hi, side, steps + 1),
                (jnp.where(better, w_new, w), jnp.where(better, d_new, d), jnp.minimum(gap, gap_new)))

    start = ((lo, hi, h_lo, h_hi, jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32)), best)
    _, (_, coefficients, gap) = jax.lax.while_loop(keep_going, step, start)
    return coefficients / divisor, issue("cagrad", gap, 10 * tolerance(dtype))


def cagrad_coefficients(gramian, c: float = 0.4, rescale: int = 1, present=None):
    return cagrad_solve(gramian, c, rescale, present)[0]


@AGGREGATORS.register("cagrad", "CAGrad (Liu et al. 2021), c: best worst-task improvement within a ball of radius "
                                "c ||mean|| around the mean gradient")
@by_value
def cagrad(c: float = 0.4, rescale: int = 1) -> Method:
    if c < 0:
        raise ValueError(f"CAGrad's c must be >= 0, got {c}")
    if rescale not in (0, 1, 2):
        raise ValueError(f"CAGrad's rescale must be 0, 1 or 2, got {rescale}")
    return certified("cagrad", lambda gramian, key, present: cagrad_solve(gramian, float(c), int(rescale), present))
