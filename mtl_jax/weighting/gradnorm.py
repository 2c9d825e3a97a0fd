"""GradNorm (Chen, Badrinarayanan, Lee & Rabinovich 2018).

Weights ``w_i`` (starting at 1, summing to ``T``) are learned so that the weighted
gradient norms ``G_i = w_i ||grad L_i||`` approach a common norm scaled by each task's
relative inverse training rate:

    L~_i = L_i(t) / L_i(0),   r_i = L~_i / mean_j L~_j,   G_bar = mean_j G_j,
    L_grad = sum_i | G_i - [G_bar r_i^alpha] |      (the bracket held constant),

``w`` takes a step of its own optax optimizer (Adam, ``learning_rate``) on ``grad_w L_grad =
sign(G_i - G_bar r_i^alpha) ||grad L_i||`` and is renormalised to sum to ``T``; the model's
step uses the weights from before this update. Tasks that train slower (larger ``r_i``) get
larger gradients; ``alpha`` sets how strongly (0: equal norms).

Gradients are taken at the shared representation ``z`` (``needs="feature_gramian"``),
as in LibMTL's ``rep_grad`` mode, instead of the last shared layer's weights of the paper:
the step then costs about as much as EW.

References: Z. Chen, V. Badrinarayanan, C.-Y. Lee, A. Rabinovich. "GradNorm: Gradient
Normalization for Adaptive Loss Balancing in Deep Multitask Networks", ICML 2018.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import optax

from mtl_jax.registry import WEIGHTINGS
from mtl_jax.tasks import Task
from mtl_jax.balancing import Method
from mtl_jax.caching import by_value


class GradNormState(NamedTuple):
    weights: jax.Array
    initial_losses: jax.Array
    started: jax.Array
    opt_state: optax.OptState


@by_value
def gradnorm(alpha: float = 1.5, learning_rate: float = 1e-3, eps: float = 1e-8) -> Method:
    optimizer = optax.adam(learning_rate)

    def init(num_tasks: int) -> GradNormState:
        weights = jnp.ones((num_tasks,), jnp.float32)
        return GradNormState(weights, jnp.ones((num_tasks,), jnp.float32), jnp.zeros((), bool),
                             optimizer.init(weights))

    def update(info, state: GradNormState, key):
        losses, gramian = info.losses, info.gramian
        del key
        grad_norms = jnp.sqrt(jnp.maximum(jnp.diagonal(gramian), 0.0))
        num_tasks = losses.shape[0]
        initial = jnp.where(state.started, state.initial_losses, jnp.maximum(losses, eps))
        weighted_norms = state.weights * grad_norms
        inverse_rate = losses / initial
        target = jnp.mean(weighted_norms) * (inverse_rate / jnp.maximum(jnp.mean(inverse_rate), eps)) ** alpha
        grad = jnp.sign(weighted_norms - target) * grad_norms
        updates, opt_state = optimizer.update(grad, state.opt_state, state.weights)
        new = jnp.maximum(optax.apply_updates(state.weights, updates), 1e-4)
        new = num_tasks * new / jnp.sum(new)
        return state.weights, GradNormState(new, initial, jnp.ones((), bool), opt_state)

    return Method(init, update, needs="feature_gramian")


@WEIGHTINGS.register("gradnorm", "GradNorm (Chen et al. 2018), alpha: learned weights equalise gradient norms "
                                 "scaled by training rates; feature level")
def from_tasks(tasks: Sequence[Task], alpha: float = 1.5, learning_rate: float = 1e-3) -> Method:
    del tasks
    return gradnorm(float(alpha), float(learning_rate))
