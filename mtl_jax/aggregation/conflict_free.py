"""ConFIG: conflict-free inverse gradients (Liu, Chu, Thuerey 2024).

With unit gradients ``u_i = g_i / ||g_i||``, the direction ``g_u`` that has the same inner
product with every ``u_i`` is the minimum-norm solution of ``U g_u = 1`` (``U`` the matrix of
unit gradients as rows): ``g_u = U^T (U U^T)^+ 1``. The update keeps that direction and takes
as its length the sum of the gradients' projections onto it:

    d = (sum_i <g_i, g^_u>) g^_u,        g^_u = g_u / ||g_u||,

so ``d`` has equal cosine similarity with every task gradient, and is conflict-free
(``<d, g_i> > 0``) whenever the unit gradients are linearly independent. ``U U^T`` is the
cosine-similarity matrix ``D^-1 G D^-1`` (``D = diag ||g_i||``) and ``g_u = sum_i b_i g_i`` with
``b = D^-1 (U U^T)^+ 1``, so everything is read from the Gramian. Tasks with a zero gradient
are left out.

References: Q. Liu, M. Chu, N. Thuerey. "ConFIG: Towards Conflict-free Training of Physics
Informed Neural Networks", ICLR 2025 (arXiv:2408.11104, 2024).
"""
from __future__ import annotations

import jax.numpy as jnp

from mtl_jax.balancing import Method, from_gramian
from mtl_jax.caching import by_value
from mtl_jax.registry import AGGREGATORS


def config_coefficients(gramian, present=None):
    norms = jnp.sqrt(jnp.maximum(jnp.diagonal(gramian), 0.0))
    nonzero = norms > 1e-15 * jnp.maximum(jnp.max(norms), 1e-30)
    present = nonzero if present is None else nonzero & present
    inverse_norms = jnp.where(present, 1.0 / jnp.where(present, norms, 1.0), 0.0)
    cosines = gramian * inverse_norms[:, None] * inverse_norms[None, :]
    b = inverse_norms * (jnp.linalg.pinv(cosines, hermitian=True) @ present.astype(gramian.dtype))
    norm_sq = b @ gramian @ b  # ||g_u||^2
    length = jnp.sum(gramian @ b)  # sum_i <g_i, g_u>
    return jnp.where(norm_sq > 1e-30, length / jnp.maximum(norm_sq, 1e-30), 0.0) * b


@AGGREGATORS.register("config", "ConFIG (Liu et al. 2024): the direction with equal cosine to every task gradient, "
                                "with the sum of their projections as its length")
@by_value
def config() -> Method:
    return from_gramian(lambda gramian, key, present: config_coefficients(gramian, present))
