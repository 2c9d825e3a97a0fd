"""Does multi-task learning help when data are scarce, on real handwriting? ``multi_digits``
(MultiMNIST-style pairs of scikit-learn's real digits, multi_digits.py) with 1,000 and 10,000
training pairs: hard sharing with equal weights, uncertainty weighting, FAMO and UPGrad
against one single-task model per digit (same seed CNN, data and epochs), 3 seeds each.

    mtl-jax compare --config experiments/configs/compare_multi_digits.py --workdir runs/compare_multi_digits
"""
import ml_collections


def get_config():
    config = ml_collections.ConfigDict()
    config.base = "multi_digits.py"
    config.overrides = ["best_metric=", "tensorboard=False"]
    config.axes = {"train_size": {"1000": ["data.train_size=1000"], "10000": ["data.train_size=10000"]},
                   "method": {"equal": ["weighting=equal"], "uw": ["weighting=uw"], "famo": ["weighting=famo"],
                              "upgrad": ["weighting=equal", "aggregator=upgrad"]}}
    config.baseline_axes = ["train_size"]
    config.seeds = [0, 1, 2]
    config.single_task = True
    config.metrics = []
    config.checkpoint = "final"
    return config
