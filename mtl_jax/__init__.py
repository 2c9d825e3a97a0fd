"""mtl_jax: functional multi-task learning in JAX.

The common path: define tasks, build a model, ``fit``, then ``predict``/``evaluate``.
"""
from mtl_jax import aggregation, balancing, checks, data, gradients, losses, metrics, models, train, weighting
from mtl_jax.balancing import chain
from mtl_jax.metrics import delta_m
from mtl_jax.tasks import Task, binary, classification, depth, multilabel, regression, segmentation
from mtl_jax.train import TrainState, evaluate, fit, plot_history, predict

__version__ = "0.1.0"

__all__ = ["aggregation", "balancing", "chain", "checks", "data", "gradients", "losses", "metrics", "models", "train", "weighting",
           "delta_m", "Task", "binary", "classification", "depth", "multilabel", "regression", "segmentation",
           "TrainState", "evaluate", "fit", "plot_history", "predict"]
