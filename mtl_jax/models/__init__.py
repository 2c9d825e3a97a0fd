"""Flax linen models: trunks, heads and their multi-task compositions."""
from mtl_jax.models.heads import Head, PixelDecoder, head_for
from mtl_jax.models.sharing import MultiTaskModel, hard_sharing, param_labels, shared_params, task_branches
from mtl_jax.models.trunks import MLP, ResNet, SeedCNN, TextEncoder

__all__ = ["Head", "PixelDecoder", "head_for", "MultiTaskModel", "hard_sharing", "task_branches",
           "param_labels", "shared_params", "MLP", "ResNet", "SeedCNN", "TextEncoder"]
