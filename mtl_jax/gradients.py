"""The gradient engine on its own: per-task gradient information and the balanced gradient for any
``params -> losses[T]`` function, inside any training loop (Flax linen, NNX split into a graph
and a state, Equinox partitioned: anything JAX differentiates).

Two levels, as in the train step (:mod:`mtl_jax.train.task_gradients`):

* **parameters** (:func:`balanced_grads`, exact): the ``T x P`` Jacobian ``J`` of the losses
  w.r.t. all parameters from ``T`` batched VJPs (one backward pass, vmapped), the Gramian
  ``G = J J^T``, the method's weights ``w`` and the gradient ``J^T w``. Memory: ``T`` copies of
  the parameters. (:func:`mtl_jax.train.make_train_step` builds the same Gramian layer by
  layer without the Jacobian, for models written to the :mod:`mtl_jax.models.contract`.)
* **features** (:func:`balanced_grads_at_features`, MGDA-UB's level): with the model split into
  ``represent(params, inputs) -> z`` and ``heads(params, z) -> losses[T]``, the per-task
  gradients ``d_i = dL_i/dz`` come from one backward pass through the heads (vmapped over the
  ``T`` cotangents, memory ``T x |z|``), and the trunk back-propagates ``sum_i w_i d_i`` once:
  about the cost of an ordinary step at any ``T``. The head parameters get ``sum_i w_i
  dL_i/dtheta`` from one more backward pass through the heads.

Either way the result is the exact gradient of ``sum_i w_i L_i`` (weights held constant), so any
optax optimizer applies it. ``method`` is any :class:`~mtl_jax.balancing.Method`: a weighting,
an aggregator, or a :func:`~mtl_jax.balancing.chain`; what it ``needs`` is built, nothing more.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from mtl_jax.balancing import Direction, Info, Method, gramian_of, weighted_sum


class Balanced(NamedTuple):
    grads: Any             # the gradient of sum_i w_i L_i, a tree like params
    losses: jax.Array      # [T]
    weights: jax.Array     # [T], the method's (the product of a chain's pieces)
    state: Any             # the method's new state
    gramian: Any = None    # [T, T] at the level used, when the method needed it


def _losses(losses) -> jax.Array:
    losses = jnp.asarray(losses)
    if losses.ndim != 1:
        raise ValueError(f"the loss function must return a [T] vector of per-task losses, got shape {losses.shape}")
    return losses


def task_jacobian(loss_fn: Callable[..., jax.Array], params, *args) -> tuple[jax.Array, Any]:
    """``(losses [T], jacobian)``: every task's gradient w.r.t. ``params`` (leaves ``[T, *leaf.shape]``)."""
    losses, pullback = jax.vjp(lambda p: loss_fn(p, *args), params)
    losses = _losses(losses)
    jacobian = jax.vmap(pullback)(jnp.eye(losses.shape[0], dtype=losses.dtype))[0]
    return losses, jacobian


def task_gramian(loss_fn: Callable[..., jax.Array], params, *args) -> tuple[jax.Array, jax.Array]:
    """``(losses [T], G)`` with ``G_ij = <grad L_i, grad L_j>`` over all of ``params``."""
    losses, jacobian = task_jacobian(loss_fn, params, *args)
    return losses, gramian_of(jacobian)


def balanced_grads(loss_fn: Callable[..., jax.Array], params, method: Method, state, key, *args,
                   present=None) -> Balanced:
    """The gradient of ``sum_i w_i L_i`` at the parameter level, ``w`` chosen by ``method``.

    ``loss_fn(params, *args) -> [T]``; ``present`` (``[T]`` bool, default all): the tasks whose
    data is in this step (the others' losses must be 0; see :mod:`mtl_jax.balancing`). A loss-only method costs one backward pass; a Gramian
    method ``T`` (vmapped). Per-coordinate methods (GradDrop) act on features: use
    :func:`balanced_grads_at_features`.
    """
    if method.needs == "feature_jacobian":
        raise ValueError("this method acts on each coordinate of the per-task gradients at the shared "
                         "representation: use balanced_grads_at_features")
    if method.needs == "losses":
        losses, pullback = jax.vjp(lambda p: loss_fn(p, *args), params)
        losses = _losses(losses)
        weights, state = method.update(Info(jax.lax.stop_gradient(losses), present=present), state, key)
        weights = jax.lax.stop_gradient(weights)
        return Balanced(pullback(weights.astype(losses.dtype))[0], losses, weights, state)
    losses, jacobian = task_jacobian(loss_fn, params, *args)
    jacobian = jax.lax.stop_gradient(jacobian)
    gramian = gramian_of(jacobian)
    weights, state = method.update(Info(jax.lax.stop_gradient(losses), gramian, present=present), state, key)
    weights = jax.lax.stop_gradient(weights)
    return Balanced(weighted_sum(weights, jacobian), losses, weights, state, gramian)


def balanced_grads_at_features(represent: Callable[[Any, Any], Any], heads: Callable[[Any, Any], jax.Array],
                               params, method: Method, state, key, inputs, present=None) -> Balanced:
    """The gradient of ``sum_i w_i L_i`` with ``w`` chosen from the gradients at the shared
    representation ``z = represent(params, inputs)``; ``heads(params, z) -> [T]``.

    Exact for the total it follows: the trunk gets the VJP of ``sum_i w_i dL_i/dz`` (or, for a
    per-coordinate method, the cotangent it returns), the heads ``sum_i w_i dL_i/dtheta``.
    ``present`` as in :func:`balanced_grads`.
    """
    z, trunk_pullback = jax.vjp(lambda p: represent(p, inputs), params)
    losses, feature_pullback = jax.vjp(lambda features: heads(params, features), z)
    losses = _losses(losses)
    stopped = jax.lax.stop_gradient(losses)
    gramian = None
    if method.needs == "losses":
        weights, state = method.update(Info(stopped, present=present), state, key)
        cotangent = None
    else:
        per_task = jax.vmap(feature_pullback)(jnp.eye(losses.shape[0], dtype=losses.dtype))[0]  # [T, *z.shape]
        per_task = jax.lax.stop_gradient(per_task)
        gramian = gramian_of(per_task)
        jacobian = per_task if method.needs == "feature_jacobian" else None
        out, state = method.update(Info(stopped, gramian, jacobian, present), state, key)
        weights, cotangent = out if isinstance(out, Direction) else (out, None)
        if cotangent is None:
            cotangent = weighted_sum(weights, per_task)
    weights = jax.lax.stop_gradient(weights).astype(losses.dtype)
    if cotangent is None:
        cotangent = feature_pullback(weights)[0]
    head_grads = jax.vjp(lambda p: heads(p, jax.lax.stop_gradient(z)), params)[1](weights)[0]
    grads = jax.tree.map(jnp.add, trunk_pullback(cotangent)[0], head_grads)
    return Balanced(grads, losses, weights, state, gramian)
