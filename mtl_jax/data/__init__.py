"""Datasets (the embedded ``houses``) and fixed-shape batching."""
from mtl_jax.data.batching import batches, num_examples, steps_per_epoch
from mtl_jax.data.houses_builder import Houses, houses_config, load_houses, read_split

__all__ = ["batches", "num_examples", "steps_per_epoch", "Houses", "houses_config", "load_houses", "read_split"]
