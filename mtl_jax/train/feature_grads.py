"""Per-task gradients at the shared representation, at the cost of one backward pass.

For a model with ``represent`` (trunk: inputs -> ``z``) and ``predict_from`` (heads), the
per-task gradients ``d_i = dL_i/dz`` come from a single backward pass through the heads,
because each head reads its own copy of ``z``. Given weights ``w`` (which may depend on
the ``d_i``), the full gradient of ``sum_i w_i L_i`` is then

    shared parameters:  VJP of the trunk at  sum_i w_i d_i   (one trunk backward pass)
    task i's head:      w_i dL_i/dtheta_i    (already computed, scaled)

which is exactly ``grad sum_i w_i L_i``: feature-level methods cost about one EW step.
This is the feature level of MGDA-UB (Sener & Koltun 2018) and LibMTL's ``rep_grad``.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

from mtl_jax.models.sharing import SHARED
from mtl_jax.tasks import Task, task_losses


def check_feature_level(model) -> None:
    """A clear error unless ``model`` exposes the shared representation and owners of params."""
    for attribute in ("represent", "predict_from", "param_owner"):
        if not hasattr(model, attribute):
            raise TypeError(f"this weighting method needs per-task gradients at the shared representation: "
                            f"the model must define {attribute!r} (see mtl_jax.models.sharing)")


def feature_level_gradients(model, tasks: Sequence[Task], params, inputs, batch, rngs,
                            weights_from: Callable[[jax.Array, jax.Array], tuple[jax.Array, Any]]):
    """``grad sum_i w_i L_i`` with ``(w, aux) = weights_from(losses, gramian)``.

    ``gramian`` is the ``T x T`` matrix ``G_ij = <dL_i/dz, dL_j/dz>`` of the per-task
    gradients at the shared representation (its diagonal holds the squared norms). Returns
    ``(grads, predictions, sums, counts, weights, aux)``; losses and the Gramian reach
    ``weights_from`` with gradients stopped.
    """
    names = [t.name for t in tasks]
    z, trunk_vjp = jax.vjp(lambda p: model.apply({"params": p}, inputs, train=True, rngs=rngs,
                                                 method="represent"), params)

    def head_losses(p, copies):
        predictions = model.apply({"params": p}, copies, train=True, rngs=rngs, method="predict_from")
        losses, sums, counts = task_losses(tasks, predictions, batch)
        return jnp.sum(losses), (losses, predictions, sums, counts)

    (head_grads, z_grads), (losses, predictions, sums, counts) = jax.grad(
        head_losses, argnums=(0, 1), has_aux=True)(params, {n: z for n in names})
    per_task = jax.tree.map(lambda *g: jnp.stack(g), *[z_grads[n] for n in names])  # leaves [T, ...]
    flat = [leaf.reshape(len(names), -1) for leaf in jax.tree.leaves(per_task)]
    gramian = sum(f @ f.T for f in flat)  # G_ij = <dL_i/dz, dL_j/dz>
    weights, aux = weights_from(jax.lax.stop_gradient(losses), jax.lax.stop_gradient(gramian))
    weights = jax.lax.stop_gradient(weights)
    shared_cotangent = jax.tree.map(lambda leaf: jnp.tensordot(weights, leaf, axes=1), per_task)
    trunk_grads = trunk_vjp(shared_cotangent)[0]
    index = {n: i for i, n in enumerate(names)}
    grads = {}
    for key, sub in params.items():
        owner = model.param_owner(key)
        grads[key] = trunk_grads[key] if owner == SHARED else \
            jax.tree.map(lambda g, w=weights[index[owner]]: w * g, head_grads[key])
    return grads, predictions, sums, counts, weights, aux
