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

AGGREGATORS = ("aligned_mtl", "cagrad", "config", "dualproj", "gradvac", "imtl_g", "mgda", "nash_mtl", "pcgrad",
               "upgrad")


def get_config():
    config = ml_collections.ConfigDict()
    config.base = "correlated_tasks.py"
    config.overrides = ["tensorboard=False", "plots=False", "gradient_diagnostics=False"]
    methods = {"equal": ["weighting=equal"], "graddrop/feature": ["aggregator=graddrop", "gradient_level=feature"]}
    for name in AGGREGATORS:
        for level in ("feature", "parameter"):
            methods[f"{name}/{level}"] = [f"aggregator={name}", f"gradient_level={level}"]
    config.axes = {"method": methods}
    config.seeds = [0, 1, 2]
    config.single_task = True
    config.metrics = []
    config.checkpoint = "final"
    return config
