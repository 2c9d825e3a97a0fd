"""mtl_jax: functional multi-task learning in JAX.

The common path: define tasks, build a model, ``fit``, then ``predict``/``evaluate``.

Names are imported on first use (PEP 562), so ``import mtl_jax`` and the ``mtl-jax`` command's
help, argument and config errors do not wait for JAX, Flax and TFDS to import.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_SUBMODULES = ("aggregation", "balancing", "checks", "data", "gradients", "losses", "metrics", "models", "train",
               "weighting")
_NAMES = {"chain": "mtl_jax.balancing", "delta_m": "mtl_jax.metrics",
          **{name: "mtl_jax.tasks" for name in ("Task", "binary", "classification", "depth", "multilabel",
                                                 "regression", "segmentation")},
          **{name: "mtl_jax.train" for name in ("TrainState", "evaluate", "fit", "plot_history", "predict")}}

__all__ = [*_SUBMODULES, *_NAMES]


def __getattr__(name: str):
    if name in _SUBMODULES:
        module = importlib.import_module(f"mtl_jax.{name}")
    elif name in _NAMES:
        module = getattr(importlib.import_module(_NAMES[name]), name)
    else:
        raise AttributeError(f"module 'mtl_jax' has no attribute {name!r}")
    globals()[name] = module
    return module


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:  # what static tools and IDEs see
    from mtl_jax import aggregation, balancing, checks, data, gradients, losses, metrics, models, train, weighting
    from mtl_jax.balancing import chain
    from mtl_jax.metrics import delta_m
    from mtl_jax.tasks import Task, binary, classification, depth, multilabel, regression, segmentation
    from mtl_jax.train import TrainState, evaluate, fit, plot_history, predict
