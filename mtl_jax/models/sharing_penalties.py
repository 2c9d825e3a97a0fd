"""Penalties that couple per-task parameters (soft parameter sharing), added to the total loss.

A penalty is a pure function ``params -> scalar``; the train step minimises
``sum_i w_i L_i + penalty(params)`` whatever the balancing method (the penalty's gradient is
added to the balanced task gradient, it is never reweighted). Both penalties read every
leaf of ``params[collection]`` (default ``"columns"``, the stacked columns of
:class:`mtl_jax.models.soft_sharing.TaskColumns`) as ``T`` task parameters stacked on axis 0.

* ``l2`` (Duong, Cohn, Bird & Cook 2015, "Low Resource Dependency Parsing: Cross-lingual
  Parameter Sharing in a Neural Network Parser", ACL)::

      Omega = weight * sum_{i<j} ||W_i - W_j||^2 = weight * T * sum_i ||W_i - mean_j W_j||^2

  zero exactly when the columns are equal; its gradient pulls each towards their mean.

* ``trace_norm`` (Yang & Hospedales 2017, "Trace Norm Regularised Deep Multi-Task
  Learning", ICLR workshop), with the task-axis unfolding of each layer's parameters::

      Omega = weight * sum_layers ||W_(T)||_*,    W_(T) = [vec W_1; ...; vec W_T]  (T x P)

  the nuclear norm (sum of singular values) is the convex surrogate of rank: it favours
  columns that span few directions, i.e. parameters shared up to scale. Its gradient is
  ``U V^T`` of the unfolding's SVD (a subgradient where singular values vanish).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

KINDS = ("none", "l2", "trace_norm")


@jax.custom_jvp
def nuclear_norm(matrix: jax.Array) -> jax.Array:
    """``sum of singular values``, with the subgradient ``U V^T`` as its derivative (finite at
    repeated or zero singular values, where the SVD's own derivative is not)."""
    return jnp.linalg.svd(matrix, compute_uv=False).sum()


@nuclear_norm.defjvp
def _nuclear_norm_jvp(primals, tangents):
    (matrix,), (tangent,) = primals, tangents
    u, s, vt = jnp.linalg.svd(matrix, full_matrices=False)
    return s.sum(), jnp.sum((u @ vt) * tangent)


def _stacked_leaves(params, collection: str):
    if collection not in params:
        raise KeyError(f"sharing penalty: the parameters have no {collection!r} entry (have {sorted(params)}); "
                       "the penalty couples per-task columns, e.g. architecture='columns'")
    leaves = jax.tree.leaves(params[collection])
    sizes = {leaf.shape[0] for leaf in leaves}
    if len(sizes) != 1:
        raise ValueError(f"sharing penalty: leaves of {collection!r} must stack the tasks on axis 0, got sizes {sizes}")
    return [leaf.reshape(leaf.shape[0], -1) for leaf in leaves]


def l2_coupling(matrix: jax.Array) -> jax.Array:
    """``sum_{i<j} ||m_i - m_j||^2`` for the rows ``m_i``, from the differences themselves (exactly
    zero for equal rows; each shift ``k`` pairs every row with the row ``k`` away, so every
    unordered pair appears twice)."""
    return 0.5 * sum(jnp.sum((matrix - jnp.roll(matrix, shift, axis=0)) ** 2) for shift in range(1, matrix.shape[0]))


@dataclasses.dataclass(frozen=True)
class SharingPenalty:
    """``params -> weight * sum over stacked leaves of the coupling`` (hashable, so steps cache)."""

    kind: str
    weight: float
    collection: str = "columns"

    def __post_init__(self):
        if self.kind not in KINDS[1:]:
            raise ValueError(f"sharing penalty must be one of {KINDS[1:]}, got {self.kind!r}")
        if self.weight < 0:
            raise ValueError(f"sharing penalty weight must be >= 0, got {self.weight}")

    def __call__(self, params) -> jax.Array:
        coupling = l2_coupling if self.kind == "l2" else nuclear_norm
        return self.weight * sum(coupling(m.astype(jnp.float32)) for m in _stacked_leaves(params, self.collection))


def make_penalty(kind: str, weight: float) -> SharingPenalty | None:
    """The configured penalty, or None for ``"none"`` or a zero weight."""
    if kind not in KINDS:
        raise ValueError(f"penalty must be one of {KINDS}, got {kind!r}")
    return None if kind == "none" or weight == 0 else SharingPenalty(kind, float(weight))
