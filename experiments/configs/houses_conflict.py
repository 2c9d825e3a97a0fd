"""Houses, five tasks, with a gradient-aggregation method and the conflict diagnostics on.

Equal loss weights, then the aggregator (``aggregator``, default UPGrad) on the task
gradients at ``gradient_level`` (feature: at the seed CNN's shared feature map, ~1 EW step;
parameter: exact, over every shared parameter). The run also logs the task-gradient cosines
and conflicting pairs every step (``gradient_conflict.png``) and measures the inter-task
affinity every 25 steps (``affinity.json``, ``affinity.png``).

    mtl-jax train --config experiments/configs/houses_conflict.py --workdir runs/upgrad
    mtl-jax train --config experiments/configs/houses_conflict.py --set aggregator=cagrad \\
        --set aggregator_kwargs.c=0.4 --set gradient_level=parameter --workdir runs/cagrad_param
"""
from houses_mtl import houses_mtl


def get_config():
    config = houses_mtl("equal")
    config.aggregator = "upgrad"
    config.aggregator_kwargs = {}
    config.gradient_level = "feature"
    config.gradient_diagnostics = True
    config.affinity_every_steps = 25
    return config
