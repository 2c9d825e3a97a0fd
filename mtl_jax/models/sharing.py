"""Hard sharing and task-specific branches: ``trunk -> [branch_t] -> head_t``.

Keeps the contract of every mtl_jax architecture (:mod:`mtl_jax.models.contract`): the
shared representation ``z`` is the trunk's output, and the shared parameters are the
trunk's (``params["trunk"]``); ``branches_<task>`` and ``heads_<task>`` belong to their task.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
from flax.core import FrozenDict

from mtl_jax.models.contract import Architecture, SHARED, owner_by_prefix, task_copy
from mtl_jax.models.heads import head_for
from mtl_jax.tasks import Task


class MultiTaskModel(Architecture):
    """A shared trunk, an optional branch per task, and one head per task.

    Pass ``heads``/``branches`` as ``flax.core.FrozenDict`` (the builders below do) so the
    model is hashable and its compiled steps are cached and reused.
    """

    trunk: nn.Module
    heads: Mapping[str, nn.Module]
    branches: Mapping[str, nn.Module] | None = None

    def represent(self, x, train: bool = False):
        return self.trunk(x, train=train)

    def predict_from(self, z, train: bool = False):
        """Predictions from ``z``, or from ``{task: z_task}`` (one copy per task, so that the
        gradient with respect to each copy is that task's gradient alone)."""
        out = {}
        for name, head in self.heads.items():
            z_task = task_copy(z, name, self.heads)
            branch = (self.branches or {}).get(name)
            out[name] = head(branch(z_task, train=train) if branch is not None else z_task, train=train)
        return out

    def param_owner(self, name: str) -> str:
        return owner_by_prefix(name, self.heads, ("heads_", "branches_"), ("trunk",), "MultiTaskModel")


def hard_sharing(trunk: nn.Module, tasks: Sequence[Task], *, head_hidden: Sequence[int] = (),
                 pool: str = "flatten", output_size: tuple[int, int] | None = None) -> MultiTaskModel:
    """``trunk -> head_t`` for every task, each head chosen by :func:`head_for`."""
    return MultiTaskModel(trunk, FrozenDict({t.name: head_for(t, hidden=head_hidden, pool=pool,
                                                              output_size=output_size) for t in tasks}))


def task_branches(shared: nn.Module, branches: Mapping[str, nn.Module], tasks: Sequence[Task], *,
                  head_hidden: Sequence[int] = (), pool: str = "flatten",
                  output_size: tuple[int, int] | None = None) -> MultiTaskModel:
    """``shared layers -> branch_t -> head_t``: the shared layers are the trunk; branches are per task."""
    unknown = sorted(set(branches) - {t.name for t in tasks})
    if unknown:
        raise ValueError(f"branches given for tasks {unknown} that are not among {[t.name for t in tasks]}")
    base = hard_sharing(shared, tasks, head_hidden=head_hidden, pool=pool, output_size=output_size)
    return MultiTaskModel(shared, base.heads, FrozenDict(branches))


def param_labels(model: nn.Module, params: Mapping[str, Any]):
    """A pytree like ``params`` whose leaves say ``"shared"`` or the owning task's name.

    Usable directly with ``optax.multi_transform`` (e.g. a different learning rate for the
    shared trunk) and by gradient methods that split shared from task-specific parameters.
    """
    return {name: jax.tree.map(lambda _, owner=model.param_owner(name): owner, sub)
            for name, sub in params.items()}


def shared_params(model: nn.Module, params: Mapping[str, Any]) -> dict:
    """The shared part of ``params`` (top-level entries owned by ``"shared"``)."""
    return {k: v for k, v in params.items() if model.param_owner(k) == SHARED}
