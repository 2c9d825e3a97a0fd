"""FAMO, fast adaptive multitask optimization (Liu et al. 2023), in O(1) per step.

Task logits ``xi`` give ``z = softmax(xi)``. The model's step uses

    w_i = z_i / (c L_i),      c = sum_j z_j / L_j,

i.e. the gradient of ``sum_i z_i log L_i`` normalised by ``c`` (losses floored at ``eps``).
The logits then learn from how much each log-loss fell: with ``delta_i = log L_i(t-1) -
log L_i(t)``, ``xi`` takes an Adam step (learning rate ``beta``, L2 decay ``gamma``) along
``J_softmax(xi)^T delta``, which moves weight to the tasks whose loss decreased least. No
extra forward or backward pass: ``L(t)`` is this step's loss (the next batch), where the
paper's code re-evaluates the updated model on the same batch. The softmax, the step of the
logits and the normalisation are over the present tasks (see :mod:`mtl_jax.balancing`); an
absent task keeps its logit and its last loss, and a task's loss change is measured from the
last step it was present.

References: B. Liu, Y. Feng, P. Stone, Q. Liu. "FAMO: Fast Adaptive Multitask Optimization",
NeurIPS 2023.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import optax

from mtl_jax.registry import WEIGHTINGS
from mtl_jax.tasks import Task
from mtl_jax.balancing import Method, among_present, keep_absent, present_of, softmax_among
from mtl_jax.caching import by_value


class FAMOState(NamedTuple):
    logits: jax.Array        # xi
    opt_state: optax.OptState
    previous: jax.Array      # [T] last step's losses
    started: jax.Array       # whether ``previous`` holds losses yet


@by_value
def famo(beta: float = 0.025, gamma: float = 1e-3, eps: float = 1e-8) -> Method:
    optimizer = optax.chain(optax.add_decayed_weights(gamma), optax.adam(beta))

    def init(num_tasks: int) -> FAMOState:
        xi = jnp.zeros((num_tasks,), jnp.float32)
        return FAMOState(xi, optimizer.init(xi), jnp.zeros((num_tasks,), jnp.float32), jnp.zeros((), bool))

    def update(info, state: FAMOState, key):
        losses = info.losses
        del key
        present = present_of(info)
        safe = jnp.maximum(losses, eps)
        seen = present & (state.previous > 0)  # present now and at some earlier step (previous >= eps)
        delta = jnp.where(seen, jnp.log(jnp.maximum(state.previous, eps)) - jnp.log(safe), 0.0)
        grad = jax.vjp(lambda xi: softmax_among(xi, present), state.logits)[1](delta)[0]
        updates, opt_state = optimizer.update(grad, state.opt_state, state.logits)
        step = state.started & jnp.any(seen)
        logits = jnp.where(step & present, optax.apply_updates(state.logits, updates), state.logits)
        opt_state = keep_absent(jax.tree.map(lambda new, old: jnp.where(step, new, old), opt_state, state.opt_state),
                                state.opt_state, present)
        z = softmax_among(logits, present)
        weights = among_present(z / (safe * jnp.sum(among_present(z / safe, present))), present)
        previous = jnp.where(present, safe, state.previous)
        return weights, FAMOState(logits, opt_state, previous, state.started | jnp.any(present))

    return Method(init, update)


@WEIGHTINGS.register("famo", "FAMO (Liu et al. 2023): O(1) adaptive weights that equalise the rate at which "
                             "log-losses fall")
def from_tasks(tasks: Sequence[Task], beta: float = 0.025, gamma: float = 1e-3) -> Method:
    del tasks
    return famo(float(beta), float(gamma))
