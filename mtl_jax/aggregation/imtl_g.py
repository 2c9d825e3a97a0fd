"""IMTL-G, the gradient-balance half of impartial multi-task learning (Liu et al. 2021).

Find ``d = sum_i a_i g_i`` with ``sum_i a_i = 1`` whose projections onto every task's unit
gradient ``u_i = g_i / ||g_i||`` are equal: ``<d, u_1> = <d, u_i>``. With
``D = [g_1 - g_i]_{i>1}`` and ``U = [u_1 - u_i]_{i>1}``,

    a_{2..T} = g_1 U^T (D U^T)^{-1},     a_1 = 1 - sum_{i>1} a_i,

every term of which is an inner product of gradients, i.e. read from the Gramian
(``<g_a, u_b> = G_ab / sqrt(G_bb)``). A singular system (duplicate or colinear
gradients) is solved by least squares. Absent tasks (see :mod:`mtl_jax.balancing`) are left
out: the first present task is the reference and the absent ones' equations are ``a_i = 0``.

References: L. Liu, Y. Li, Z. Kuang, J.-H. Xue, Y. Chen, W. Yang, Q. Liao, W. Zhang.
"Towards Impartial Multi-task Learning", ICLR 2021.
"""
from __future__ import annotations

import jax.numpy as jnp

from mtl_jax.balancing import Method, from_gramian
from mtl_jax.caching import by_value
from mtl_jax.registry import AGGREGATORS


def imtl_g_coefficients(gramian, present=None):
    n = gramian.shape[0]
    if n == 1:
        return jnp.ones((1,), gramian.dtype)
    if present is None:
        return _imtl_g(gramian)
    order = jnp.argsort(~present, stable=True)  # the present tasks first, in their order
    ordered = present[order]
    both = ordered[1:, None] & ordered[None, 1:]
    coefficients = _imtl_g(gramian[order][:, order], both) * ordered
    return jnp.zeros_like(coefficients).at[order].set(coefficients)


def _imtl_g(gramian, both=None):
    """The coefficients with task 0 as the reference; ``both[i, j]``: tasks ``i + 1`` and ``j + 1``
    are present (the absent ones' rows and columns of the system become the identity)."""
    norms = jnp.sqrt(jnp.maximum(jnp.diagonal(gramian), 1e-30))
    g_dot_u = gramian / norms[None, :]  # <g_a, u_b>
    first_u = g_dot_u[0, 0] - g_dot_u[0, 1:]  # g_1 U^T
    # (D U^T)_{ij} = <g_1 - g_i, u_1 - u_j>,  i, j = 2..T
    system = (g_dot_u[0, 0] - g_dot_u[0, 1:][None, :] - g_dot_u[1:, 0][:, None] + g_dot_u[1:, 1:])
    if both is not None:
        system = jnp.where(both, system, jnp.eye(system.shape[0], dtype=system.dtype))
        first_u = jnp.where(jnp.diagonal(both), first_u, 0.0)
    rest = jnp.linalg.lstsq(system.T, first_u)[0]
    return jnp.concatenate([1 - jnp.sum(rest, keepdims=True), rest])


@AGGREGATORS.register("imtl_g", "IMTL-G (Liu et al. 2021): the direction with equal projections on every task's "
                                "unit gradient")
@by_value
def imtl_g() -> Method:
    return from_gramian(lambda gramian, key, present: imtl_g_coefficients(gramian, present))
