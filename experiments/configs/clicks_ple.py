"""Clicks: PLE (Tang et al. 2020) — two extraction levels, two shared and two per-task experts each."""
from clicks_mtl import clicks_mtl


def get_config():
    return clicks_mtl("ple", levels=2, shared_experts=2, task_experts=2, expert_features=(32,))
