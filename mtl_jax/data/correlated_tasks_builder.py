"""The generated ``correlated_tasks`` dataset as a tensorflow-datasets builder (no download).

``CorrelatedTasks`` writes :mod:`mtl_jax.data.correlated_tasks` examples into array_record
files once per variant (split sizes, seed, number of tasks, correlation, input size: all in the
configuration's name, so each is cached apart) and :func:`load_correlated_tasks` reads them back
(:mod:`mtl_jax.data.generated`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from mtl_jax.data import correlated_tasks
from mtl_jax.data.generated import GeneratedBuilder, SplitsConfig, load_generated, splits_config


class CorrelatedTasksConfig(SplitsConfig):
    """Split sizes and seed, plus the task structure."""

    def __init__(self, *, num_tasks: int, correlation: float, features: int, **kwargs):
        super().__init__(**kwargs)
        self.num_tasks, self.correlation, self.features = num_tasks, correlation, features


def correlated_tasks_config(train_size: int = 2000, validation_size: int = 500, test_size: int = 2000,
                            seed: int = 0, num_tasks: int = 8, correlation: float = 0.5,
                            features: int = 32) -> CorrelatedTasksConfig:
    """A configuration for any sizes, seed and task structure; its name encodes them all."""
    correlated_tasks.correlation_matrix(num_tasks, correlation)  # checks both
    if features < num_tasks:
        raise ValueError(f"correlated_tasks: features ({features}) must be at least num_tasks ({num_tasks})")
    sizes = splits_config("correlated_tasks", train_size, validation_size, test_size, seed)
    return CorrelatedTasksConfig(name=f"{sizes.name}-t{num_tasks}-rho{correlation:g}-d{features}",
                                 train_size=train_size, validation_size=validation_size, test_size=test_size,
                                 seed=seed, num_tasks=num_tasks, correlation=correlation, features=features,
                                 description=f"{num_tasks} regression tasks, correlation +-{correlation:g}, "
                                             f"{features} input features")


class CorrelatedTasks(GeneratedBuilder):
    """T regression targets of one input vector, in two groups correlated +rho within, -rho across."""

    GENERATOR = correlated_tasks
    BUILDER_CONFIGS = [correlated_tasks_config()]

    def _features(self) -> tfds.features.FeaturesDict:
        config = self.builder_config
        return tfds.features.FeaturesDict({
            "id": tfds.features.Scalar(np.int64),
            "x": tfds.features.Tensor(shape=(config.features,), dtype=np.float32),
            **{name: tfds.features.Scalar(np.float32)
               for name in correlated_tasks.task_names(config.num_tasks)}})

    def _generate_examples(self, num_examples: int, seed: int, split: str):
        config = self.builder_config
        arrays = correlated_tasks.examples(num_examples, config.num_tasks, config.correlation, config.features,
                                           seed, split)
        for i in range(num_examples):
            yield i, {key: value[i] for key, value in arrays.items()}


def load_correlated_tasks(train_size: int = 2000, validation_size: int = 500, test_size: int = 2000,
                          seed: int = 0, num_tasks: int = 8, correlation: float = 0.5, features: int = 32,
                          data_dir: str | Path | None = None, in_memory: bool = True) -> dict[str, Any]:
    """Prepares (once) and loads ``correlated_tasks``: ``{"train", "validation", "test"}`` -> dict
    of arrays (``x`` float32 ``[N, features]``, ``t0`` ... ``t{T-1}`` float32 ``[N]``), or, with
    ``in_memory=False``, a :class:`~mtl_jax.data.sources.RecordSource` per split."""
    config = correlated_tasks_config(train_size, validation_size, test_size, seed, num_tasks, correlation, features)
    return load_generated(CorrelatedTasks, config, data_dir, in_memory=in_memory)
