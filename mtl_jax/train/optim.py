"""Optimizers, learning-rate schedules and gradient clipping from a config, all optax.

:func:`make_optimizer` returns ``(optimizer, learning_rate_fn)``; the schedule is a function
of the step (``learning_rate_fn(step)``) given to the optax optimizer and to the logger.
Clipping by global norm runs before the optimizer: ``optax.chain(clip_by_global_norm(c), opt)``.

Schedules (``total_steps`` = epochs x steps per epoch, warm-up included):

* ``constant``: ``lr``; with ``warmup_steps`` a linear ramp from 0 first;
* ``cosine``: linear warm-up, then cosine decay to ``end_factor * lr`` at ``total_steps``;
* ``linear``: linear warm-up, then linear decay to ``end_factor * lr``;
* ``exponential``: linear warm-up, then ``lr * decay_rate ** ((step - warmup) / decay_steps)``.
"""
from __future__ import annotations

from typing import Callable

import optax

from mtl_jax.caching import by_value
from mtl_jax.registry import OPTIMIZERS, SCHEDULES

OPTIMIZERS.register("adam", "Adam (Kingma & Ba 2015)")(optax.adam)
OPTIMIZERS.register("adamw", "Adam with decoupled weight decay (Loshchilov & Hutter 2019)")(optax.adamw)
OPTIMIZERS.register("sgd", "stochastic gradient descent, optional (Nesterov) momentum")(optax.sgd)
OPTIMIZERS.register("rmsprop", "RMSProp (Tieleman & Hinton 2012)")(optax.rmsprop)


def _warmup(lr: float, warmup_steps: int, after: optax.Schedule) -> optax.Schedule:
    if warmup_steps <= 0:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup_steps), after], [warmup_steps])


@SCHEDULES.register("constant", "a constant learning rate, after an optional linear warm-up")
def constant(lr, total_steps, warmup_steps=0, end_factor=0.0, decay_rate=0.5, decay_steps=1000):
    return _warmup(lr, warmup_steps, optax.constant_schedule(lr))


@SCHEDULES.register("cosine", "linear warm-up, then cosine decay to end_factor x lr at the last step")
def cosine(lr, total_steps, warmup_steps=0, end_factor=0.0, decay_rate=0.5, decay_steps=1000):
    decay = max(total_steps - warmup_steps, 1)
    return _warmup(lr, warmup_steps, optax.cosine_decay_schedule(lr, decay, alpha=end_factor))


@SCHEDULES.register("linear", "linear warm-up, then linear decay to end_factor x lr at the last step")
def linear(lr, total_steps, warmup_steps=0, end_factor=0.0, decay_rate=0.5, decay_steps=1000):
    decay = max(total_steps - warmup_steps, 1)
    return _warmup(lr, warmup_steps, optax.linear_schedule(lr, end_factor * lr, decay))


@SCHEDULES.register("exponential", "linear warm-up, then lr x decay_rate every decay_steps (smoothly)")
def exponential(lr, total_steps, warmup_steps=0, end_factor=0.0, decay_rate=0.5, decay_steps=1000):
    return _warmup(lr, warmup_steps, optax.exponential_decay(lr, decay_steps, decay_rate))


@by_value
def make_optimizer(name: str = "adam", learning_rate: float = 1e-3, *, schedule: str = "constant",
                   total_steps: int = 1, warmup_steps: int = 0, end_factor: float = 0.0, decay_rate: float = 0.5,
                   decay_steps: int = 1000, grad_clip_norm: float = 0.0, weight_decay: float = 0.0,
                   momentum: float = 0.0) -> tuple[optax.GradientTransformation, Callable[[int], float]]:
    """The optax optimizer a config describes, and its learning-rate schedule."""
    if learning_rate <= 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
    if grad_clip_norm < 0 or weight_decay < 0 or warmup_steps < 0:
        raise ValueError("grad_clip_norm, weight_decay and warmup_steps must be >= 0")
    lr_fn = SCHEDULES.get(schedule)(learning_rate, total_steps, warmup_steps, end_factor, decay_rate, decay_steps)
    factory = OPTIMIZERS.get(name)
    if name == "adamw":
        optimizer = factory(lr_fn, weight_decay=weight_decay)
    elif name in ("sgd", "rmsprop"):
        optimizer = factory(lr_fn, momentum=momentum or None) if name == "sgd" else factory(lr_fn, momentum=momentum)
        if weight_decay:
            optimizer = optax.chain(optax.add_decayed_weights(weight_decay), optimizer)
    else:
        if weight_decay:
            raise ValueError(f"weight_decay with {name!r}: use optimizer 'adamw' (decoupled) or 'sgd'")
        optimizer = factory(lr_fn)
    if grad_clip_norm:
        optimizer = optax.chain(optax.clip_by_global_norm(grad_clip_norm), optimizer)
    return optimizer, lr_fn
