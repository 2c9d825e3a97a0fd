"""Base config for comparing balancing methods: five global `houses` tasks on the seed CNN.

``price`` ($100k) and ``windows`` (a count, 1-9: its MSE is an order of magnitude larger)
are regressions; ``kind``, ``storeys`` and ``roof_colour`` are classifications. Their losses
differ in scale and difficulty: the imbalance loss-weighting methods are for. Per-method
configs beside this file call :func:`houses_mtl` with a method name.

    mtl-jax train --config experiments/configs/houses_mtl.py --set weighting=uw --workdir runs/uw
"""
from mtl_jax.config import default_config


def houses_mtl(weighting="equal", **weighting_kwargs):
    config = default_config()
    config.dataset = "houses"
    config.data = {"train_size": 3000, "validation_size": 500, "test_size": 1000, "seed": 0}
    config.tasks = {name: {"weight": 1.0} for name in ("price", "windows", "kind", "storeys", "roof_colour")}
    config.model = "seed_cnn"
    config.head_hidden = (64,)
    config.weighting = weighting
    config.weighting_kwargs = weighting_kwargs
    config.best_metric = "price/rmse"
    return config


def get_config():
    return houses_mtl()
