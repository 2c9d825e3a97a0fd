"""Does multi-task learning help when data are scarce? Five `houses` tasks (houses_mtl.py) with
300 and with 1,000 training images: hard sharing with every loss-weighting method against one
single-task model per task (same seed CNN, data and epochs), 3 seeds each.

    mtl-jax compare --config experiments/configs/compare_houses_scarce.py --workdir runs/compare_houses_scarce

Reported per training-set size: each task's first test metric (price/windows RMSE, accuracies),
delta-m% against the single-task models, ranks, time per step.
"""
import ml_collections

METHODS = ("equal", "uw", "dwa", "gradnorm", "famo", "rlw", "imtl_l", "db_mtl", "gls")


def get_config():
    config = ml_collections.ConfigDict()
    config.base = "houses_mtl.py"
    config.overrides = ["data.validation_size=300", "data.test_size=1000", "epochs=15", "batch_size=32",
                        "best_metric=", "tensorboard=False"]
    config.axes = {"train_size": {"300": ["data.train_size=300"], "1000": ["data.train_size=1000"]},
                   "method": {name: [f"weighting={name}"] for name in METHODS}}
    config.baseline_axes = ["train_size"]
    config.seeds = [0, 1, 2]
    config.single_task = True
    config.metrics = []
    config.checkpoint = "final"
    return config
