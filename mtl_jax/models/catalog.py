"""Trunks by name for configs, and the model a config describes.

A config gives ``model`` (a trunk name below), ``model_kwargs`` (the trunk's fields),
``head_hidden`` and ``pool`` for the heads; :func:`build_model` makes the multi-task model.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from mtl_jax.models.sharing import MultiTaskModel, hard_sharing
from mtl_jax.models.trunks import MLP, ResNet, SeedCNN, TextEncoder
from mtl_jax.registry import MODELS
from mtl_jax.tasks import Task

MODELS.register("seed_cnn", "conv3x3(32)-ReLU-pool, conv3x3(64)-ReLU-pool: the seed example's image trunk")(SeedCNN)
MODELS.register("mlp", "fully connected trunk on flattened inputs (features, dropout)")(MLP)
MODELS.register("resnet", "small pre-activation ResNet with GroupNorm (stage_sizes, widths)")(ResNet)
MODELS.register("text_encoder", "token embeddings, bag-of-words or transformer layers, masked mean pool")(TextEncoder)


def hashable(value: Any) -> Any:
    """Lists (e.g. from a JSON config) to tuples, recursively: Flax module fields must hash."""
    if isinstance(value, (list, tuple)):
        return tuple(hashable(v) for v in value)
    return value


def build_model(name: str, tasks: Sequence[Task], *, trunk_kwargs: Mapping[str, Any] | None = None,
                head_hidden: Sequence[int] = (), pool: str = "flatten",
                output_size: tuple[int, int] | None = None) -> MultiTaskModel:
    """Hard sharing: the named trunk, one head per task (dense tasks get a pixel decoder)."""
    trunk = MODELS.get(name)(**{k: hashable(v) for k, v in (trunk_kwargs or {}).items()})
    return hard_sharing(trunk, tasks, head_hidden=hashable(head_hidden), pool=pool, output_size=output_size)
