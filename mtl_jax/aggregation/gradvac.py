"""GradVac: gradient vaccine, aligning task gradients to a learned similarity goal (Wang et al. 2021).

Every pair of tasks has a similarity goal ``phi^_ij``, an exponential moving average of their
observed cosine similarity (state, initialised to 0). For every task ``i``, over the other
tasks ``j`` in a random order (from the step's key), with ``phi_ij = cos(g'_i, g_j)``:

    if phi_ij < phi^_ij:
        g'_i <- g'_i + ||g'_i|| (phi^_ij sqrt(1 - phi_ij^2) - phi_ij sqrt(1 - phi^_ij^2))
                       / (||g_j|| sqrt(1 - phi^_ij^2))  g_j
    phi^_ij <- (1 - beta) phi^_ij + beta phi_ij,

starting from ``g'_i = g_i``; the update is ``sum_i g'_i``. The added component makes the
cosine of ``g'_i`` with ``g_j`` exactly ``phi^_ij``. With goals of 0 this is PCGrad; positive
goals also pull non-conflicting but poorly aligned gradients together. Each ``g'_i`` stays a
combination ``sum_k C_ik g_k``, so everything is read from the Gramian (as in
:mod:`mtl_jax.aggregation.pcgrad`). The paper applies it per layer; here it acts on the
gradients at the chosen level as a whole.

References: Z. Wang, Y. Tsvetkov, O. Firat, Y. Cao. "Gradient Vaccine: Investigating and
Improving Multi-task Optimization in Massively Multilingual Models", ICLR 2021.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from mtl_jax.balancing import Method, present_of
from mtl_jax.caching import by_value
from mtl_jax.registry import AGGREGATORS


def gradvac_coefficients(gramian, goals, key, beta: float, present=None):
    """``(coefficients, new goals)`` for one step."""
    n = gramian.shape[0]
    eye = jnp.eye(n, dtype=gramian.dtype)
    norms = jnp.sqrt(jnp.maximum(jnp.diagonal(gramian), 0.0))

    def vaccinate(i):
        order = jax.random.permutation(jax.random.fold_in(key, i), n)

        def body(position, carry):
            row, goal_row = carry
            j = order[position]
            own_norm = jnp.sqrt(jnp.maximum(row @ gramian @ row, 0.0))
            valid = (j != i) & (own_norm > 1e-15) & (norms[j] > 1e-15)
            phi = jnp.clip(row @ gramian[:, j] / jnp.maximum(own_norm * norms[j], 1e-30), -1.0, 1.0)
            goal = goal_row[j]
            root_goal = jnp.sqrt(jnp.maximum(1 - goal ** 2, 1e-12))
            scale = own_norm * (goal * jnp.sqrt(jnp.maximum(1 - phi ** 2, 0.0)) - phi * root_goal) / \
                (jnp.maximum(norms[j], 1e-30) * root_goal)
            row = jnp.where(valid & (phi < goal), row + scale * eye[j], row)
            goal_row = goal_row.at[j].set(jnp.where(valid, (1 - beta) * goal + beta * phi, goal))
            return row, goal_row

        return jax.lax.fori_loop(0, n, body, (eye[i], goals[i]))

    rows, new_goals = jax.vmap(vaccinate)(jnp.arange(n))
    if present is not None:  # an absent task's zero gradient changes no goal and no other row
        rows = jnp.where(present[:, None], rows, 0.0)
    return jnp.sum(rows, axis=0), new_goals


@AGGREGATORS.register("gradvac", "GradVac (Wang et al. 2021), beta: align each pair of gradients to an EMA goal "
                                 "of their cosine similarity")
@by_value
def gradvac(beta: float = 0.01) -> Method:
    if not 0 < beta <= 1:
        raise ValueError(f"GradVac's beta must be in (0, 1], got {beta}")

    def init(num_tasks: int):
        return jnp.zeros((num_tasks, num_tasks), jnp.float32)

    def update(info, goals, key):
        gramian = info.gramian
        coefficients, goals = gradvac_coefficients(gramian, goals.astype(gramian.dtype), key, float(beta),
                                                   present_of(info))
        return coefficients, goals.astype(jnp.float32)

    return Method(init, update, needs="feature_gramian")
