"""Clicks: MMoE (Ma et al. 2018) — four shared experts over the embeddings, a gate and tower per task."""
from clicks_mtl import clicks_mtl


def get_config():
    return clicks_mtl("mmoe", num_experts=4, expert_features=(32,))
