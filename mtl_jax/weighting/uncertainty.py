"""Uncertainty weighting, UW (Kendall, Gal & Cipolla 2018).

Each task has a learned log-variance ``s_i = log sigma_i^2``; the objective is

    regression form:      sum_i 1/(2 sigma_i^2) L_i + log sigma_i  =  sum_i 0.5 e^{-s_i} L_i + 0.5 s_i
    classification form:  sum_i 1/sigma_i^2 L_i + log sigma_i      =  sum_i e^{-s_i} L_i + 0.5 s_i

so the model sees weights ``w_i = c_i e^{-s_i}`` (``c_i`` = 0.5 or 1) and ``s`` descends the
same objective with its own optax optimizer, from the same (gradient-stopped) losses: joint
training of ``(theta, s)`` split into two pure updates. For a fixed loss the optimum is
``sigma_i^2 = L_i`` (regression) or ``2 L_i`` (classification): tasks with larger loss get
smaller weights. An absent task's log-variance and moments do not move (its loss of 0
would otherwise drive ``sigma`` to 0). Regression and depth tasks take the regression form, the others the
classification form, unless ``forms`` says otherwise.

References: A. Kendall, Y. Gal, R. Cipolla. "Multi-Task Learning Using Uncertainty to Weigh
Losses for Scene Geometry and Semantics", CVPR 2018.
"""
from __future__ import annotations

import functools
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import optax

from mtl_jax.registry import WEIGHTINGS
from mtl_jax.tasks import Task
from mtl_jax.balancing import Method, among_present, keep_absent, present_of

FORMS = {"regression": 0.5, "classification": 1.0}
REGRESSION_KINDS = ("regression", "depth")


class UncertaintyState(NamedTuple):
    log_variance: jax.Array  # s_i = log sigma_i^2
    opt_state: optax.OptState


def uncertainty(forms: Sequence[str], learning_rate: float = 1e-3, initial_log_variance: float = 0.0) -> Method:
    """UW for tasks whose forms are ``"regression"`` or ``"classification"`` (in task order)."""
    unknown = [f for f in forms if f not in FORMS]
    if unknown:
        raise ValueError(f"uncertainty weighting forms must be 'regression' or 'classification', got {unknown}")
    return _uncertainty(tuple(forms), float(learning_rate), float(initial_log_variance))


@functools.lru_cache(maxsize=64)
def _uncertainty(forms: tuple[str, ...], learning_rate: float, initial: float) -> Method:
    scale = jnp.asarray([FORMS[f] for f in forms], jnp.float32)
    optimizer = optax.adam(learning_rate)

    def objective(log_variance, losses):
        return jnp.sum(scale * jnp.exp(-log_variance) * losses + 0.5 * log_variance)

    def init(num_tasks: int) -> UncertaintyState:
        if num_tasks != len(forms):
            raise ValueError(f"uncertainty weighting was built for {len(forms)} tasks, not {num_tasks}")
        s = jnp.full((num_tasks,), initial, jnp.float32)
        return UncertaintyState(s, optimizer.init(s))

    def update(info, state: UncertaintyState, key):
        losses = info.losses
        del key
        present = present_of(info)
        weights = among_present(scale * jnp.exp(-state.log_variance), present)
        grad = among_present(jax.grad(objective)(state.log_variance, losses), present)
        updates, opt_state = optimizer.update(grad, state.opt_state, state.log_variance)
        new = UncertaintyState(optax.apply_updates(state.log_variance, updates), opt_state)
        return weights, keep_absent(new, state, present)  # an absent task's sigma learns nothing

    return Method(init, update)


@WEIGHTINGS.register("uncertainty", "uncertainty weighting (Kendall et al. 2018): learned log-variances; for tasks on "
                           "different scales and noise levels", aliases=("uw",))
def from_tasks(tasks: Sequence[Task], learning_rate: float = 1e-3, initial_log_variance: float = 0.0,
               forms: Sequence[str] | None = None) -> Method:
    forms = forms or ["regression" if t.kind in REGRESSION_KINDS else "classification" for t in tasks]
    return uncertainty(forms, learning_rate, initial_log_variance)
