"""PCGrad: projecting conflicting gradients (Yu et al. 2020), from the Gramian alone.

For every task ``i``, in a random order of the other tasks ``j`` (drawn from the step's key):

    if <g'_i, g_j> < 0:   g'_i <- g'_i - <g'_i, g_j> / ||g_j||^2 g_j,

starting from ``g'_i = g_i``; the update is ``sum_i g'_i``. Every ``g'_i`` stays a linear
combination ``sum_k C_ik g_k`` whose inner products follow from the Gramian
(``<g'_i, g_j> = (C G)_ij``), so the method needs no gradient vectors: the coefficients are
``c = sum_i C_i``.

References: T. Yu, S. Kumar, A. Gupta, S. Levine, K. Hausman, C. Finn. "Gradient Surgery for
Multi-Task Learning", NeurIPS 2020.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from mtl_jax.balancing import Method, from_gramian
from mtl_jax.caching import by_value
from mtl_jax.registry import AGGREGATORS


def pcgrad_coefficients(gramian, key, present=None):
    n = gramian.shape[0]
    eye = jnp.eye(n, dtype=gramian.dtype)

    def project_task(i):
        order = jax.random.permutation(jax.random.fold_in(key, i), n)

        def body(position, row):
            j = order[position]
            dot = row @ gramian[:, j]
            conflict = (dot < 0) & (j != i) & (gramian[j, j] > 1e-30)
            return jnp.where(conflict, row - dot / jnp.maximum(gramian[j, j], 1e-30) * eye[j], row)

        return jax.lax.fori_loop(0, n, body, eye[i])

    rows = jax.vmap(project_task)(jnp.arange(n))  # an absent task (zero gradient) never conflicts
    return jnp.sum(rows if present is None else jnp.where(present[:, None], rows, 0.0), axis=0)


@AGGREGATORS.register("pcgrad", "PCGrad (Yu et al. 2020): remove each gradient's conflicting components, in a "
                                "random task order per step")
@by_value
def pcgrad() -> Method:
    return from_gramian(pcgrad_coefficients)
