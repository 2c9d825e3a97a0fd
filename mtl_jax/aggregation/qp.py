"""Small quadratic programs over task coefficients, solved in jit with accelerated projected
gradient (FISTA, Beck & Teboulle 2009).

Both minimise ``v^T G v`` for a positive semi-definite Gramian ``G``:

* :func:`min_norm_in_simplex`: over the simplex ``{v >= 0, sum v = 1}`` (MGDA's min-norm
  point of the convex hull of the gradients); projection by sorting (Duchi et al. 2008);
* :func:`min_norm_above`: over ``{v >= lower}`` (UPGrad's and DualProj's projections onto
  the dual cone); projection by clipping.

``G`` is scaled by its trace (an upper bound of its largest eigenvalue) so a fixed step is
safe, and a fixed number of iterations keeps the program static. Results are exact to float tolerance for
the well-conditioned Gramians of training and stay finite for zero, duplicate and
colinear gradients.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

ITERATIONS = 500


def _scaled(gramian):
    """``G / trace(G)``: its largest eigenvalue is then at most 1 (``G`` is PSD), so step 1/2 is safe."""
    gramian = (gramian + gramian.T) / 2
    trace = jnp.trace(gramian)
    return jnp.where(trace > 1e-30, gramian / jnp.maximum(trace, 1e-30), gramian)


def _fista(gramian, start, project, iterations):
    gramian = _scaled(gramian)

    def body(i, carry):
        v, y, t = carry
        v_next = project(y - gramian @ y)  # gradient 2 G y, Lipschitz constant <= 2: step 1/2
        t_next = (1 + jnp.sqrt(1 + 4 * t * t)) / 2
        return v_next, v_next + (t - 1) / t_next * (v_next - v), t_next

    v, _, _ = jax.lax.fori_loop(0, iterations, body, (start, start, jnp.ones((), start.dtype)))
    return v


def project_to_simplex(v):
    """Euclidean projection onto ``{x >= 0, sum x = 1}`` (Duchi et al. 2008)."""
    n = v.shape[0]
    u = jnp.sort(v)[::-1]
    cumulative = jnp.cumsum(u) - 1
    index = jnp.arange(1, n + 1, dtype=v.dtype)
    rho = jnp.max(jnp.where(u - cumulative / index > 0, jnp.arange(n), 0))
    theta = cumulative[rho] / (rho + 1)
    return jnp.maximum(v - theta, 0)


def min_norm_in_simplex(gramian, iterations: int = ITERATIONS):
    n = gramian.shape[0]
    return _fista(gramian, jnp.full((n,), 1.0 / n, gramian.dtype), project_to_simplex, iterations)


def min_norm_above(gramian, lower, iterations: int = ITERATIONS):
    return _fista(gramian, lower, lambda v: jnp.maximum(v, lower), iterations)
