"""Flax linen models: trunks, heads and the multi-task architectures that combine them."""
from mtl_jax.models.experts import MMoE, PLE, gate_weights, mmoe, ple
from mtl_jax.models.heads import Head, PixelDecoder, head_for
from mtl_jax.models.mixed_precision import MixedPrecision, mixed_precision
from mtl_jax.models.mtan import MTAN, mtan
from mtl_jax.models.sharing import MultiTaskModel, hard_sharing, param_labels, shared_params, task_branches
from mtl_jax.models.sharing_penalties import SharingPenalty
from mtl_jax.models.soft_sharing import TaskColumns, task_columns
from mtl_jax.models.trunks import MLP, FieldEmbedding, ResNet, SeedCNN, TextEncoder

__all__ = ["MMoE", "PLE", "gate_weights", "mmoe", "ple", "Head", "PixelDecoder", "head_for", "MixedPrecision", "mixed_precision",
           "MTAN", "mtan",
           "MultiTaskModel", "hard_sharing", "param_labels", "shared_params", "task_branches", "SharingPenalty",
           "TaskColumns", "task_columns", "MLP", "FieldEmbedding", "ResNet", "SeedCNN", "TextEncoder"]
