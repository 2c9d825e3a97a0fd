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
the step then costs about as much as EW. With absent tasks (see :mod:`mtl_jax.balancing`)
the means, the targets and the renormalisation (to the number of present tasks) are over the
present tasks; an absent task's weight, moments and initial loss (taken when it is first
present) do not move.

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
from mtl_jax.balancing import Method, among_present, count_present, keep_absent, mean_among, present_of
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
        # initial losses of 0: not yet seen (a seen loss is floored at eps)
        return GradNormState(weights, jnp.zeros((num_tasks,), jnp.float32), jnp.zeros((), bool),
                             optimizer.init(weights))

    def update(info, state: GradNormState, key):
        losses, gramian = info.losses, info.gramian
        del key
        present = present_of(info)
        count = count_present(present)
        grad_norms = jnp.sqrt(jnp.maximum(jnp.diagonal(gramian), 0.0))
        initial = jnp.where(present & (state.initial_losses <= 0), jnp.maximum(losses, eps), state.initial_losses)
        weights = among_present(count * state.weights / jnp.sum(among_present(state.weights, present)), present)
        weighted_norms = weights * grad_norms
        inverse_rate = among_present(losses / jnp.maximum(initial, eps), present)
        target = mean_among(weighted_norms, present) * (
            inverse_rate / jnp.maximum(mean_among(inverse_rate, present), eps)) ** alpha
        grad = among_present(jnp.sign(weighted_norms - target) * grad_norms, present)
        updates, opt_state = optimizer.update(grad, state.opt_state, weights)
        new = jnp.maximum(optax.apply_updates(weights, updates), 1e-4)
        new = jnp.where(present, count * new / jnp.sum(among_present(new, present)), state.weights)
        new_state = GradNormState(new, initial, jnp.ones((), bool), keep_absent(opt_state, state.opt_state, present))
        return weights, new_state

    return Method(init, update, needs="feature_gramian")


@WEIGHTINGS.register("gradnorm", "GradNorm (Chen et al. 2018), alpha: learned weights equalise gradient norms "
                                 "scaled by training rates; feature level")
def from_tasks(tasks: Sequence[Task], alpha: float = 1.5, learning_rate: float = 1e-3) -> Method:
    del tasks
    return gradnorm(float(alpha), float(learning_rate))
