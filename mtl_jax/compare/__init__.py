"""Scripted method comparison: a grid of methods x architectures x datasets x seeds, single-task
baselines, and one results table with delta-m% (``mtl-jax compare``)."""
from mtl_jax.compare.runner import compare, load_compare_config, plan

__all__ = ["compare", "load_compare_config", "plan"]
