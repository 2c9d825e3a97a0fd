"""Trunks and architectures by name for configs, and the model a config describes.

A config gives ``model`` (a trunk name below, or ``"none"``), ``model_kwargs`` (the trunk's
fields), ``architecture`` (how tasks share: ``hard``, ``branches``, ``mmoe``, ``ple``,
``cross_stitch``, ``columns``, ``mtan``) with ``architecture_kwargs``, and ``head_hidden`` / ``pool`` for the
heads; :func:`build_model` makes the multi-task model. For ``mmoe`` and ``ple`` the trunk is
the shared input encoder (optional); ``cross_stitch``, ``columns`` and ``mtan`` build their
own shared layers and take no trunk.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import flax.linen as nn

from mtl_jax.models.experts import mmoe, ple
from mtl_jax.models.mtan import mtan
from mtl_jax.models.sharing import hard_sharing, task_branches
from mtl_jax.models.soft_sharing import task_columns
from mtl_jax.models.trunks import MLP, FieldEmbedding, ResNet, SeedCNN, TextEncoder
from mtl_jax.registry import ARCHITECTURES, MODELS
from mtl_jax.tasks import Task

NO_TRUNK = "none"

MODELS.register("seed_cnn", "conv3x3(32)-ReLU-pool, conv3x3(64)-ReLU-pool: the seed example's image trunk")(SeedCNN)
MODELS.register("mlp", "fully connected trunk on flattened inputs (features, dropout)")(MLP)
MODELS.register("resnet", "small pre-activation ResNet with GroupNorm (stage_sizes, widths)")(ResNet)
MODELS.register("text_encoder", "token embeddings, bag-of-words or transformer layers, masked mean pool")(TextEncoder)
MODELS.register("field_embedding", "categorical id fields [B, F] to concatenated embeddings (vocab_sizes, "
                "embed_dim)")(FieldEmbedding)


def _no_trunk(name: str, trunk) -> None:
    if trunk is not None:
        raise ValueError(f"architecture {name!r} builds its own shared layers: set model='none' "
                         "(and its widths in architecture_kwargs)")


@ARCHITECTURES.register("hard", "hard sharing: the trunk, then one head per task", aliases=("hps",))
def _hard(tasks, trunk, *, head_hidden, pool, output_size):
    if trunk is None:
        raise ValueError("architecture 'hard' needs a trunk: set model (mtl-jax list: models)")
    return hard_sharing(trunk, tasks, head_hidden=head_hidden, pool=pool, output_size=output_size)


@ARCHITECTURES.register("branches", "task-specific branches: the trunk is shared, then each task in branch_tasks "
                        "(default: every non-per-pixel task) has its own dense layers (branch_features) before its "
                        "head")
def _branches(tasks, trunk, *, head_hidden, pool, output_size, branch_features: Sequence[int] = (64,),
              branch_tasks: Sequence[str] = ()):
    if trunk is None:
        raise ValueError("architecture 'branches' needs a shared trunk: set model (mtl-jax list: models)")
    names = [t.name for t in tasks]
    chosen = list(branch_tasks) or [t.name for t in tasks if not t.dense]
    unknown = [n for n in chosen if n not in names]
    if unknown:
        raise ValueError(f"architecture 'branches': branch_tasks {unknown} are not tasks of this config ({names})")
    dense = [t.name for t in tasks if t.dense and t.name in chosen]
    if dense:
        raise ValueError(f"architecture 'branches': branches are dense layers on the flattened representation; "
                         f"per-pixel tasks {dense} cannot take one (leave them out of branch_tasks)")
    branches = {name: MLP(tuple(int(f) for f in branch_features)) for name in chosen}
    return task_branches(trunk, branches, tasks, head_hidden=head_hidden, pool=pool, output_size=output_size)


@ARCHITECTURES.register("mmoe", "MMoE (Ma et al. 2018): shared experts, a softmax gate and tower per task; "
                        "the trunk (optional) is the shared encoder (num_experts, expert_features)")
def _mmoe(tasks, trunk, *, head_hidden, pool, output_size, **kwargs):
    return mmoe(tasks, encoder=trunk, tower_hidden=head_hidden, **kwargs)


@ARCHITECTURES.register("ple", "CGC/PLE (Tang et al. 2020): shared and per-task experts over levels "
                        "(levels, shared_experts, task_experts, expert_features)")
def _ple(tasks, trunk, *, head_hidden, pool, output_size, **kwargs):
    return ple(tasks, encoder=trunk, tower_hidden=head_hidden, **kwargs)


@ARCHITECTURES.register("cross_stitch", "cross-stitch network (Misra et al. 2016): one column per task, mixed "
                        "after every layer (features, layer=dense|conv, self_weight)")
def _cross_stitch(tasks, trunk, *, head_hidden, pool, output_size, **kwargs):
    _no_trunk("cross_stitch", trunk)
    return task_columns(tasks, stitch=True, head_hidden=head_hidden, pool=pool, output_size=output_size, **kwargs)


@ARCHITECTURES.register("columns", "soft sharing: one column per task, coupled only by a penalty "
                        "(set penalty=l2|trace_norm; features, layer)")
def _columns(tasks, trunk, *, head_hidden, pool, output_size, **kwargs):
    _no_trunk("columns", trunk)
    return task_columns(tasks, stitch=False, head_hidden=head_hidden, pool=pool, output_size=output_size, **kwargs)


@ARCHITECTURES.register("mtan", "MTAN (Liu et al. 2019): shared conv stages, per-task attention masks; global "
                        "and per-pixel heads (features)")
def _mtan(tasks, trunk, *, head_hidden, pool, output_size, **kwargs):
    _no_trunk("mtan", trunk)
    return mtan(tasks, head_hidden=head_hidden, pool=pool, output_size=output_size, **kwargs)


def hashable(value: Any) -> Any:
    """Lists (e.g. from a JSON config) to tuples, recursively: Flax module fields must hash."""
    if isinstance(value, (list, tuple)):
        return tuple(hashable(v) for v in value)
    return value


def build_model(name: str, tasks: Sequence[Task], *, trunk_kwargs: Mapping[str, Any] | None = None,
                head_hidden: Sequence[int] = (), pool: str = "flatten",
                output_size: tuple[int, int] | None = None, architecture: str = "hard",
                architecture_kwargs: Mapping[str, Any] | None = None) -> nn.Module:
    """The named trunk (``"none"``: no trunk) in the named architecture, one head per task."""
    trunk = None if name == NO_TRUNK else MODELS.get(name)(**{k: hashable(v) for k, v in (trunk_kwargs or {}).items()})
    kwargs = {k: hashable(v) for k, v in (architecture_kwargs or {}).items()}
    try:
        return ARCHITECTURES.get(architecture)(tuple(tasks), trunk, head_hidden=hashable(head_hidden), pool=pool,
                                               output_size=output_size, **kwargs)
    except TypeError as error:
        raise ValueError(f"architecture {architecture!r}: bad architecture_kwargs {sorted(kwargs)} ({error})") from error
