"""Task conflict with many tasks, offline: ``correlated_tasks`` (T = 8 regression tasks competing
for a 4-unit shared representation, correlated_tasks.py), every gradient-aggregation method at
both gradient levels (the shared representation, ~1 equal-weight step; every shared parameter,
exact) against equal weighting and one single-task model per task, 3 seeds each.

    mtl-jax compare --config experiments/configs/compare_correlated_tasks.py --workdir runs/compare_correlated_tasks

The table reports each task's test RMSE, delta-m% against the single-task models (each with the
whole 4-unit trunk to itself) and the time per step. Where the seeds train at once (GPU/TPU)
the 3 seeds of a method are one vmapped program.
"""
import ml_collections

from mtl_jax.compare.grid import every_aggregator


def get_config():
    config = ml_collections.ConfigDict()
    config.base = "correlated_tasks.py"
    config.overrides = ["tensorboard=False", "plots=False", "gradient_diagnostics=False"]
    config.axes = {"method": every_aggregator()}
    config.seeds = [0, 1, 2]
    config.single_task = True
    config.metrics = []
    config.checkpoint = "final"
    return config
