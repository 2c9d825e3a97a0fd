"""Exact small quadratic programs over task coefficients, with a certificate of optimality.

The conflict-averse aggregators reduce to convex quadratic programs in ``T`` coefficients,
for a positive semi-definite Gramian ``G`` (any conditioning, rank-deficient included):

* :func:`min_norm_above`: ``min_{v >= u} v^T G v`` (UPGrad's and DualProj's projection onto
  the dual cone; with ``v = u + x`` an NNLS problem in ``x``);
* :func:`min_norm_in_simplex`: ``min_{v >= 0, sum v = 1} v^T G v`` (MGDA's min-norm point);
* :func:`solve_simplex`: ``min_{x >= 0, sum x = 1} 1/2 x^T G x - b^T x`` (CAGrad's subproblem).

They are solved by one primal active-set method: Lawson & Hanson's NNLS (1974), which with
the simplex's equality constraint is Wolfe's min-norm-point algorithm (1976). Each iteration
solves the problem on the current free set exactly (bounds only: a Cholesky factor of the
free block with a ridge of ``n eps``, refined twice against the unregularised block; with the
equality: an eigendecomposition of the KKT matrix, pseudo-inverted for rank deficiency, with
one refinement step) and either moves to it or steps back to the boundary. It ends in
finitely many steps at the exact solution, whatever the conditioning; ``max_steps`` (``4T +
20``) only guards against cycling in floating point and is never the normal exit.

The problem is solved for ``D G D`` with ``D = diag(1 / ||g_i||)`` (Jacobi scaling: the
minimiser maps back exactly), so that every task is at unit scale: task gradients whose
norms span 1e-6 to 1e6 are as easy as equal ones, and tolerances hold per task. Everything
runs in ``G``'s dtype (float64 when ``jax_enable_x64`` is on), inside ``jit`` and ``vmap``,
without host callbacks.

The certificate: every solve returns a :class:`Solution` with the componentwise relative KKT
residual of the scaled problem, ``max_j r_j / (|G| |x| + |b| + |mu c|)_j``, where the
multipliers are ``lambda = G x - b + mu c`` (``mu`` the simplex's), ``r_j = |lambda_j|`` on
the support (stationarity) and ``max(-lambda_j, 0)`` off it (dual feasibility);
:func:`tolerance` gives the level a converged solve reaches (1e-10 in float64, 1e-5 in
float32, a few ulps above the rounding of ``lambda`` itself). For UPGrad ``lambda_j = <d, g_j> / ||g_j||``,
so a small residual *is* the statement that the direction conflicts with no task.

References: C. L. Lawson, R. J. Hanson. "Solving Least Squares Problems", Prentice-Hall,
1974 (ch. 23, NNLS). R. Bro, S. de Jong. "A fast non-negativity-constrained least squares
algorithm", Journal of Chemometrics 11, 1997 (a guessed first free set). P. Wolfe. "Finding the nearest point in a polytope", Mathematical
Programming 11, 1976.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class Solution(NamedTuple):
    x: jax.Array         # the minimiser
    residual: jax.Array  # relative KKT residual: the certificate (see the module doc)
    steps: jax.Array     # active-set iterations taken


def tolerance(dtype) -> float:
    """The relative KKT residual a converged solve reaches in ``dtype``."""
    return 1e-10 if jnp.finfo(dtype).bits >= 64 else 1e-5


def _jacobi(gramian):
    """``(D G D, D)`` with ``D = diag(1 / ||g_i||)`` (1 for a zero task): every task at unit scale,
    so tolerances are relative to each task's own gradient, whatever the spread of scales."""
    gramian = (gramian + gramian.T) / 2
    norms = jnp.sqrt(jnp.maximum(jnp.diagonal(gramian), 0.0))
    inverse = jnp.where(norms > jnp.finfo(gramian.dtype).tiny * 1e6, 1.0 / jnp.where(norms > 0, norms, 1.0), 1.0)
    return gramian * jnp.outer(inverse, inverse), inverse


def _free_set_solver(gramian, b, c):
    """``solve(free) -> z``: the minimiser of ``1/2 z^T G z - b^T z`` with ``z = 0`` off ``free``
    (and ``c^T z = 1`` unless ``c`` is None), from the KKT system of the free set."""
    n = gramian.shape[0]
    eps = jnp.finfo(gramian.dtype).eps

    def solve_bounded(free):
        # Without the equality the free block is positive semi-definite: Cholesky with a ridge of
        # n eps (G has a unit diagonal), then refinement against the unregularised block.
        f = free.astype(gramian.dtype)
        block = gramian * jnp.outer(f, f) + jnp.diag(1.0 - f)
        factor = jax.scipy.linalg.cho_factor(block + n * eps * jnp.diag(f), lower=True)
        rhs = b * f
        solution = jax.scipy.linalg.cho_solve(factor, rhs)
        for _ in range(2):
            solution = solution + jax.scipy.linalg.cho_solve(factor, rhs - block @ solution)
        return solution * f

    if c is None:
        return solve_bounded

    def solve(free):
        # With c^T z = 1 the KKT matrix is indefinite: its eigendecomposition, pseudo-inverted.
        # The border is c^T z = 1 as (c / s)^T z = 1 / s, s the free set's largest c: at G's scale.
        f = free.astype(gramian.dtype)
        block = gramian * jnp.outer(f, f) + jnp.diag(1.0 - f)
        size = jnp.maximum(jnp.max(c * f), jnp.finfo(gramian.dtype).tiny)
        edge = c * f / size
        kkt = jnp.block([[block, edge[:, None]], [edge[None, :], jnp.zeros((1, 1), gramian.dtype)]])
        rhs = jnp.concatenate([b * f, jnp.ones((1,), gramian.dtype) / size])
        values, vectors = jnp.linalg.eigh(kkt)
        keep = jnp.abs(values) > 0.5 * eps * jnp.max(jnp.abs(values))
        inverse = jnp.where(keep, 1.0 / jnp.where(keep, values, 1.0), 0.0)

        def apply(r):
            return vectors @ (inverse * (vectors.T @ r))

        solution = apply(rhs)
        solution = solution + apply(rhs - kkt @ solution)  # one step of iterative refinement
        return solution[:n] * f

    return solve


def _multipliers(gramian, b, c, x):
    """``(lambda, scale)``: the bound constraints' multipliers ``lambda = G x - b + mu c`` (``mu``
    the equality's, from ``x^T lambda = 0``) and, per coordinate, the size of the terms that make
    it, ``|G| |x| + |b| + |mu c|``: the rounding error of ``lambda_j`` is a few ulps of it."""
    gradient = gramian @ x - b
    size = jnp.abs(gramian) @ jnp.abs(x) + jnp.abs(b)
    if c is not None:
        mu = -(x @ gradient) / jnp.maximum(c @ x, jnp.finfo(x.dtype).tiny)
        gradient, size = gradient + mu * c, size + jnp.abs(mu) * c
    floor = jnp.maximum(jnp.max(size) * jnp.finfo(x.dtype).eps, jnp.finfo(x.dtype).tiny)
    return gradient, jnp.maximum(size, floor)


def _residual(gramian, b, c, x, allowed=None):
    """``max_j r_j / scale_j`` with ``r_j = |lambda_j|`` where ``x_j > 0`` (stationarity, hence
    complementarity) and ``max(-lambda_j, 0)`` where ``x_j = 0`` (dual feasibility), over the
    ``allowed`` coordinates (those held at 0 are not part of the problem)."""
    lam, scale = _multipliers(gramian, b, c, x)
    r = jnp.where(x > 0, jnp.abs(lam), jnp.maximum(-lam, 0.0)) / scale
    return jnp.max(r if allowed is None else jnp.where(allowed, r, 0.0))


def _active_set(gramian, b, c, x, free, allowed=None) -> Solution:
    """Lawson-Hanson (``c`` None) / Wolfe (``c^T x = 1``) from the feasible ``x`` with support ``free``;
    coordinates outside ``allowed`` (default: none) are never freed: they stay at 0."""
    n = gramian.shape[0]
    eps = jnp.finfo(gramian.dtype).eps
    solve = _free_set_solver(gramian, b, c)
    max_steps = 4 * n + 20
    allowed = jnp.ones((n,), bool) if allowed is None else allowed

    class Carry(NamedTuple):
        x: jax.Array
        free: jax.Array
        blocked: jax.Array  # freed, then stepped straight back to 0: not freed again until x moves
        guessed: jax.Array  # x has not moved from the start: drops correct the guessed free set
        steps: jax.Array
        done: jax.Array

    def body(carry: Carry) -> Carry:
        z = solve(carry.free)
        inside = jnp.all(jnp.where(carry.free, z > 0, True))
        # Not inside: step from x towards z until the first free coefficient reaches 0.
        leaving = carry.free & (z <= 0)
        # x - z > 0 where leaving (x >= 0 >= z); both 0 only for a guessed free coefficient still at 0.
        ratios = jnp.where(leaving, carry.x / jnp.where(leaving & (carry.x - z > 0), carry.x - z, 1.0), jnp.inf)
        alpha = jnp.clip(jnp.min(ratios), 0.0, 1.0)
        hit = leaving & (ratios <= alpha * (1 + 4 * eps))
        partial = jnp.where(hit, 0.0, jnp.maximum(carry.x + alpha * (z - carry.x), 0.0))
        # Inside: z is optimal on the free set; free the most violated bound, if any.
        lam, scale = _multipliers(gramian, b, c, z)
        violation = lam / scale
        candidates = ~carry.free & ~carry.blocked & allowed & (violation < -16 * eps)
        enter = jnp.argmin(jnp.where(candidates, violation, jnp.inf))
        optimal = ~jnp.any(candidates)
        x = jnp.where(inside, z, partial)
        free = jnp.where(inside, carry.free.at[enter].set(carry.free[enter] | ~optimal), carry.free & ~hit)
        moved = jnp.max(jnp.abs(x - carry.x)) > 4 * eps * jnp.max(jnp.abs(x))
        blocked = (jnp.where(moved, jnp.zeros_like(carry.blocked), carry.blocked)
                   | (~inside & hit & ~moved & ~carry.guessed))
        return Carry(x, free, blocked, carry.guessed & ~moved, carry.steps + 1, inside & optimal)

    start = Carry(x, free, jnp.zeros((n,), bool), jnp.ones((), bool), jnp.zeros((), jnp.int32), jnp.zeros((), bool))
    end = jax.lax.while_loop(lambda carry: ~carry.done & (carry.steps < max_steps), body, start)
    x = jnp.maximum(end.x, 0.0)
    if c is not None:
        x = x / (c @ x)
    return Solution(x, _residual(gramian, b, c, x, allowed), end.steps)


def min_norm_above(gramian, lower) -> Solution:
    """``argmin_{v >= lower} v^T G v``; with ``v = lower + x``, NNLS in ``x`` (``b = -G lower``).

    The first free set is the bounds violated at ``x = 0`` (the tasks that ``sum_j lower_j g_j``
    conflicts with, ``(G lower)_j < 0``), as in Bro & de Jong's warm-started NNLS (1997): the
    active set then usually needs one or two corrections instead of one step per conflict.
    """
    scaled, inverse = _jacobi(gramian)
    n = gramian.shape[0]
    lower_scaled = lower / inverse
    b = -scaled @ lower_scaled
    eps = jnp.finfo(gramian.dtype).eps
    violated = b > 16 * eps * (jnp.abs(scaled) @ jnp.abs(lower_scaled))
    solution = _active_set(scaled, b, None, jnp.zeros((n,), gramian.dtype), violated)
    return solution._replace(x=inverse * (lower_scaled + solution.x))


def solve_simplex(gramian, b=None, start=None, allowed=None) -> Solution:
    """``argmin_{x >= 0, sum x = 1} 1/2 x^T G x - b^T x``; ``start``: a feasible warm start.

    ``allowed`` (``[n]`` bool, default all): the simplex of those coordinates only (the others
    are 0), i.e. the same problem for the present tasks alone; at least one must be allowed."""
    scaled, inverse = _jacobi(gramian)
    n = gramian.shape[0]
    b = jnp.zeros((n,), gramian.dtype) if b is None else b * inverse
    if start is None:  # the best vertex
        value = jnp.diagonal(scaled) / 2 / inverse ** 2 - b / inverse
        vertex = jnp.argmin(value if allowed is None else jnp.where(allowed, value, jnp.inf))
        start = jax.nn.one_hot(vertex, n, dtype=gramian.dtype)
    # In the scaled problem the constraint is sum_i x_i / ||g_i|| = 1; with c = inverse / m (largest
    # entry 1) and y = m x it reads c^T y = 1, keeping the KKT matrix's border at the scale of G.
    m = jnp.max(inverse)
    solution = _active_set(scaled, m * b, inverse / m, m * start / inverse, start > 0, allowed)
    return solution._replace(x=inverse * solution.x / m)


def min_norm_in_simplex(gramian, allowed=None) -> Solution:
    """``argmin_{v in simplex} v^T G v``: MGDA's min-norm point of the gradients' convex hull
    (of the ``allowed`` tasks' gradients)."""
    return solve_simplex(gramian, allowed=allowed)
