"""Per-task gradient information for gradient-based methods, and the update they lead to.

For a model with ``represent`` (trunk: inputs -> ``z``) and ``predict_from`` (heads), the
per-task gradients ``d_i = dL_i/dz`` come from a single backward pass through the heads,
because each head reads its own copy of ``z``. A method then sees one of

* ``feature_gramian``: ``G_ij = <d_i, d_j>`` (the feature level of MGDA-UB, Sener & Koltun
  2018; LibMTL's ``rep_grad``) — about the cost of an EW step;
* ``parameter_gramian``: ``G_ij = <grad_theta L_i, grad_theta L_j>`` over *all* shared
  parameters ``theta``, exact, accumulated layer by layer without the ``T x P`` Jacobian
  (:mod:`mtl_jax.train.parameter_gramian`) — about ``1 + T/3`` EW steps;
* ``feature_jacobian``: the ``d_i`` themselves (``[T, *z.shape]``), for per-coordinate
  methods such as GradDrop, which return the cotangent to send through the trunk.

Given weights ``w`` (which may depend on this information), the gradient is that of
``sum_i w_i L_i``:

    shared parameters:  VJP of the trunk at  sum_i w_i d_i   (one trunk backward pass)
    task i's parameters: w_i dL_i/dtheta_i   (already computed by the heads' pass, scaled)

so the update is exact whichever level chose ``w``; head parameters always receive their own
task's gradient.
"""
from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp

from mtl_jax.balancing import Direction, Info, gramian_of, weighted_sum
from mtl_jax.models.contract import SHARED
from mtl_jax.tasks import Task, task_losses
from mtl_jax.train import parameter_gramian as pg

GRADIENT_NEEDS = ("feature_gramian", "parameter_gramian", "feature_jacobian")


def check_gradient_model(model) -> None:
    """A clear error unless ``model`` exposes the shared representation and owners of params."""
    for attribute in ("represent", "predict_from", "param_owner"):
        if not hasattr(model, attribute):
            raise TypeError(f"this method needs per-task gradients: the model must define {attribute!r} "
                            "(see mtl_jax.models.sharing)")


def _stacked(tree_by_task: dict, names):
    return jax.tree.map(lambda *g: jnp.stack(g), *[tree_by_task[n] for n in names])


def weighted_gradients(model, tasks: Sequence[Task], params, inputs, batch, rngs, needs: str,
                       combine: Callable[[Info], tuple]):
    """``grad sum_i w_i L_i`` where the method's ``combine`` chooses ``w``.

    ``combine(info)`` receives the :class:`~mtl_jax.balancing.Info` (losses, the Gramian and,
    for ``feature_jacobian``, the stacked ``d_i``; gradients stopped) and returns ``(weights,
    aux)``, where ``weights`` may be a :class:`~mtl_jax.balancing.Direction` (weights and the
    cotangent to send through the trunk).
    Returns ``(grads, predictions, sums, counts, weights, aux, gramian)``; ``gramian`` is
    the one the method saw (the feature-level one for ``feature_jacobian``).
    """
    if needs not in GRADIENT_NEEDS:
        raise ValueError(f"unknown gradient information {needs!r}; expected one of {GRADIENT_NEEDS}")
    names = [t.name for t in tasks]
    shared_keys = [k for k in params if model.param_owner(k) == SHARED]
    if needs == "parameter_gramian":
        taps = pg.find_taps(model, params, inputs, train=True, rngs=rngs)
        z, pullback, recorded = pg.tapped_forward(model, taps, params, shared_keys, inputs, train=True, rngs=rngs)
    else:
        z, trunk_vjp = jax.vjp(lambda p: model.apply({"params": p}, inputs, train=True, rngs=rngs,
                                                     method="represent"), params)

    def head_losses(p, copies):
        predictions = model.apply({"params": p}, copies, train=True, rngs=rngs, method="predict_from")
        losses, sums, counts = task_losses(tasks, predictions, batch)
        return jnp.sum(losses), (losses, predictions, sums, counts)

    (head_grads, z_grads), (losses, predictions, sums, counts) = jax.grad(
        head_losses, argnums=(0, 1), has_aux=True)(params, {n: z for n in names})
    per_task = _stacked(z_grads, names)  # leaves [T, *z.shape]
    losses = jax.lax.stop_gradient(losses)
    if needs == "parameter_gramian":
        signals, general_grads = pullback(per_task)
        gramian = pg.parameter_gramian(taps, recorded, signals, general_grads)
    else:
        gramian = gramian_of(per_task)
    gramian = jax.lax.stop_gradient(gramian)
    jacobian = jax.lax.stop_gradient(per_task) if needs == "feature_jacobian" else None
    weights, aux = combine(Info(losses, gramian, jacobian, present=counts > 0))
    shared_cotangent = None
    if isinstance(weights, Direction):
        weights, shared_cotangent = weights
    weights = jax.lax.stop_gradient(weights)
    if needs == "parameter_gramian":
        trunk_grads = pg.weighted_shared_grads(taps, params, shared_keys, recorded, signals, general_grads, weights)
    else:
        if shared_cotangent is None:
            shared_cotangent = weighted_sum(weights, per_task)
        trunk_grads = trunk_vjp(shared_cotangent)[0]
    index = {n: i for i, n in enumerate(names)}
    grads = {}
    for key, sub in params.items():
        owner = model.param_owner(key)
        grads[key] = trunk_grads[key] if owner == SHARED else \
            jax.tree.map(lambda g, w=weights[index[owner]]: w * g, head_grads[key])
    return grads, predictions, sums, counts, weights, aux, gramian
