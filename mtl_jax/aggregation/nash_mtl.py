"""Nash-MTL: the update as a Nash bargaining solution between tasks (Navon et al. 2022).

Each task's utility of a direction ``d`` in the ball is ``<g_i, d>``; the bargaining solution
is ``d = sum_i a_i g_i`` with ``a > 0`` solving

    (G a)_i = 1 / a_i   for every task,      i.e.  <g_i, d> a_i = 1,

so a task whose gradient is small or in conflict gets a larger coefficient. This is the
stationarity condition of the strictly convex ``f(a) = 1/2 a^T G a - sum_i log a_i``, which is
minimised here by damped Newton steps ``a <- a + delta / (1 + lambda)`` (``lambda`` the Newton
decrement: the iterates stay positive and converge quadratically; Nesterov & Nemirovski's
self-concordance) instead of the paper's sequence of convex programs (cvxpy).

As in the authors' code, ``G`` is first divided by its Frobenius norm (so the step keeps the
scale of the loss gradients; with ``T = 1`` the coefficient is 1), and a ridge of ``ridge *
G_ii`` (each task at its own scale) keeps ``f`` bounded below when a positive combination of
the gradients is 0 (e.g. exactly opposite gradients), where the exact system has no solution. ``update_every`` recomputes
the coefficients every k steps and reuses them in between (the paper's speed-up). The
certificate is ``max_i |a_i (G a)_i - 1|`` (see :func:`nash_solve`): an ill-posed system is
reported, never silently replaced by another method's answer.

References: A. Navon, A. Shamsian, I. Achituve, H. Maron, K. Kawaguchi, G. Chechik,
E. Fetaya. "Multi-Task Learning as a Bargaining Game", ICML 2022.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from mtl_jax.balancing import Method, present_of
from mtl_jax.caching import by_value
from mtl_jax.aggregation.certificate import Certificate, blank, issue
from mtl_jax.aggregation.qp import tolerance
from mtl_jax.registry import AGGREGATORS

ITERATIONS = 40


def nash_solve(gramian, ridge: float = 1e-6, iterations: int = ITERATIONS, present=None
               ) -> tuple[jax.Array, Certificate]:
    """The coefficients and their certificate: ``max_i |a_i (G a)_i - 1|`` on the normalised ``G``
    without the ridge. The ridge moves equation ``i`` by ``ridge (a_i ||g_i||)^2``, which the
    tolerance ``1000 ridge + 10 tolerance(dtype)`` (1e-3 by default) accepts. When a positive
    combination of the gradients is 0 (e.g. two exactly opposite tasks) the bargaining system
    has no solution, which shows as a residual of order 1. Absent tasks (``present`` False, see
    :mod:`mtl_jax.balancing`) are out of the bargain: their equations become ``a_i = 1 / a_i``,
    decoupled from the others, and their coefficients 0."""
    n = gramian.shape[0]
    norm = jnp.sqrt(jnp.sum(gramian ** 2))
    exact = (gramian + gramian.T) / 2 / jnp.maximum(norm, 1e-30)
    floor = jnp.maximum(jnp.trace(exact) / n, 1e-12) * 1e-12
    g = exact + ridge * jnp.diag(jnp.maximum(jnp.diagonal(exact), floor))  # each task's own scale
    present = jnp.ones((n,), bool) if present is None else present
    g = jnp.where(present[:, None] & present[None, :], g, jnp.eye(n, dtype=g.dtype))

    def body(_, a):
        gradient = g @ a - 1.0 / a
        hessian = g + jnp.diag(1.0 / a ** 2)
        delta = -jnp.linalg.solve(hessian, gradient)
        decrement = jnp.sqrt(jnp.maximum(-gradient @ delta, 0.0))
        return a + delta / (1.0 + decrement)

    start = 1.0 / jnp.sqrt(jnp.maximum(jnp.diagonal(g), 1e-12))
    a = jax.lax.fori_loop(0, iterations, body, start)
    solved = norm > 1e-30
    residual = jnp.where(solved, jnp.max(jnp.where(present, jnp.abs(a * (exact @ a) - 1.0), 0.0)), 0.0)
    a = jnp.where(solved, a, jnp.ones((n,), gramian.dtype))
    a = jnp.where(present, a, 0.0)
    return a, issue("nash_mtl", residual, 1000 * ridge + 10 * tolerance(gramian.dtype))


def nash_coefficients(gramian, ridge: float = 1e-6, iterations: int = ITERATIONS, present=None):
    return nash_solve(gramian, ridge, iterations, present)[0]


class NashState(NamedTuple):
    coefficients: jax.Array
    count: jax.Array
    certificate: Certificate


@AGGREGATORS.register("nash_mtl", "Nash-MTL (Navon et al. 2022), update_every: Nash bargaining between tasks, "
                                  "a_i <g_i, d> = 1")
@by_value
def nash_mtl(update_every: int = 1, ridge: float = 1e-6) -> Method:
    if update_every < 1:
        raise ValueError(f"Nash-MTL's update_every must be >= 1, got {update_every}")

    def init(num_tasks: int) -> NashState:
        return NashState(jnp.ones((num_tasks,), jnp.float32), jnp.zeros((), jnp.int32), blank("nash_mtl"))

    def update(info, state: NashState, key):
        gramian = info.gramian
        del key
        present = present_of(info)
        # solved coefficients are > 0 exactly for the tasks present then: solve again when that changed
        fresh = (state.count % update_every == 0) | jnp.any((state.coefficients > 0) != present)
        coefficients, certificate = jax.lax.cond(
            fresh, lambda: (lambda a, c: (a.astype(jnp.float32), c))(*nash_solve(gramian, ridge, present=present)),
            lambda: (state.coefficients, state.certificate))
        return coefficients, NashState(coefficients, state.count + 1, certificate)

    return Method(init, update, needs="feature_gramian")
