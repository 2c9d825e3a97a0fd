"""IMTL-G, the gradient-balance half of impartial multi-task learning (Liu et al. 2021).

Find ``d = sum_i a_i g_i`` with ``sum_i a_i = 1`` whose projections onto every task's unit
gradient ``u_i = g_i / ||g_i||`` are equal: ``<d, u_1> = <d, u_i>``. With
``D = [g_1 - g_i]_{i>1}`` and ``U = [u_1 - u_i]_{i>1}``,

    a_{2..T} = g_1 U^T (D U^T)^{-1},     a_1 = 1 - sum_{i>1} a_i,

every term of which is an inner product of gradients, i.e. read from the Gramian
(``<g_a, u_b> = G_ab / sqrt(G_bb)``). A singular system (duplicate or colinear
gradients) is solved by least squares.

References: L. Liu, Y. Li, Z. Kuang, J.-H. Xue, Y. Chen, W. Yang, Q. Liao, W. Zhang.
"Towards Impartial Multi-task Learning", ICLR 2021.
"""
from __future__ import annotations

import jax.numpy as jnp

from mtl_jax.balancing import Method, from_gramian
from mtl_jax.caching import by_value
from mtl_jax.registry import AGGREGATORS


def imtl_g_coefficients(gramian):
    n = gramian.shape[0]
    if n == 1:
        return jnp.ones((1,), gramian.dtype)
    norms = jnp.sqrt(jnp.maximum(jnp.diagonal(gramian), 1e-30))
    g_dot_u = gramian / norms[None, :]  # <g_a, u_b>
    first_u = g_dot_u[0, 0] - g_dot_u[0, 1:]  # g_1 U^T
    # (D U^T)_{ij} = <g_1 - g_i, u_1 - u_j>,  i, j = 2..T
    system = (g_dot_u[0, 0] - g_dot_u[0, 1:][None, :] - g_dot_u[1:, 0][:, None] + g_dot_u[1:, 1:])
    rest = jnp.linalg.lstsq(system.T, first_u)[0]
    return jnp.concatenate([1 - jnp.sum(rest, keepdims=True), rest])


@AGGREGATORS.register("imtl_g", "IMTL-G (Liu et al. 2021): the direction with equal projections on every task's "
                                "unit gradient")
@by_value
def imtl_g() -> Method:
    return from_gramian(lambda gramian, key: imtl_g_coefficients(gramian))
