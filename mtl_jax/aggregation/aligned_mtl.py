"""Aligned-MTL: aligning the principal components of the task gradients (Senushkin et al. 2023).

With the eigendecomposition ``G = V diag(lambda) V^T`` of the Gramian (eigenvalues above the
numerical rank tolerance kept, ``lambda_min`` the smallest of them), the balance matrix

    B = sqrt(lambda_min) V diag(lambda)^(-1/2) V^T

turns the task gradients into ``B J``, whose Gramian ``B G B = lambda_min V V^T`` is
``lambda_min I`` for linearly independent gradients: orthogonal gradients of equal norm,
i.e. a condition number of 1 (the paper's stability criterion). The update is their sum,
``d = sum_i (B 1)_i g_i``, scaled by the smallest singular value so that a dominant task
cannot inflate it.

References: D. Senushkin, N. Patakin, A. Kuznetsov, A. Konushin. "Independent Component
Alignment for Multi-Task Learning", CVPR 2023.
"""
from __future__ import annotations

import jax.numpy as jnp

from mtl_jax.balancing import Method, from_gramian
from mtl_jax.caching import by_value
from mtl_jax.registry import AGGREGATORS


def balance_matrix(gramian):
    """``B`` above (zero for a zero Gramian)."""
    n = gramian.shape[0]
    eigenvalues, vectors = jnp.linalg.eigh((gramian + gramian.T) / 2)
    tolerance = jnp.max(eigenvalues) * n * jnp.finfo(gramian.dtype).eps
    kept = eigenvalues > jnp.maximum(tolerance, 1e-30)
    smallest = jnp.min(jnp.where(kept, eigenvalues, jnp.inf))
    inverse_roots = jnp.where(kept, 1.0 / jnp.sqrt(jnp.where(kept, eigenvalues, 1.0)), 0.0)
    matrix = jnp.sqrt(jnp.where(jnp.isfinite(smallest), smallest, 0.0)) * (vectors * inverse_roots) @ vectors.T
    return jnp.where(jnp.any(kept), matrix, jnp.zeros_like(matrix))


def aligned_mtl_coefficients(gramian, present=None):
    """An absent task's zero row and column only add a zero eigenvalue, which is dropped: the
    result is the present tasks' own."""
    coefficients = jnp.sum(balance_matrix(gramian), axis=0)
    return coefficients if present is None else jnp.where(present, coefficients, 0.0)


@AGGREGATORS.register("aligned_mtl", "Aligned-MTL (Senushkin et al. 2023): the sum of the task gradients made "
                                     "orthogonal and of equal norm (condition number 1)")
@by_value
def aligned_mtl() -> Method:
    return from_gramian(lambda gramian, key, present: aligned_mtl_coefficients(gramian, present))
