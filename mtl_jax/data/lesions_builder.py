"""The generated ``lesions`` medical-style dataset (:mod:`mtl_jax.data.lesions`) as a
tensorflow-datasets builder: written to array_record once and read back like ``houses``."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from mtl_jax.data import lesions
from mtl_jax.data.generated import GeneratedBuilder, SplitsConfig, load_generated, splits_config


def lesions_config(train_size: int = 4000, validation_size: int = 500, test_size: int = 1000,
                   seed: int = 0) -> SplitsConfig:
    """A configuration for any sizes and seed; its name encodes them."""
    return splits_config("lesions", train_size, validation_size, test_size, seed)


class Lesions(GeneratedBuilder):
    """32x32 scans; tasks: lesion present (binary), its grade (3 classes, -1 without one), its mask."""

    GENERATOR = lesions
    BUILDER_CONFIGS = [lesions_config()]

    def _features(self) -> tfds.features.FeaturesDict:
        return tfds.features.FeaturesDict({
            "id": tfds.features.Scalar(np.int64),
            "image": tfds.features.Tensor(shape=(lesions.SIZE, lesions.SIZE, 1), dtype=np.uint8, encoding="bytes"),
            "lesion": tfds.features.ClassLabel(names=("absent", "present")),
            "grade": tfds.features.Scalar(np.int64, doc="0 mild, 1 moderate, 2 severe; -1: no lesion"),
            "mask": tfds.features.Tensor(shape=(lesions.SIZE, lesions.SIZE), dtype=np.uint8, encoding="bytes"),
        })


def load_lesions(train_size: int = 4000, validation_size: int = 500, test_size: int = 1000, seed: int = 0,
                 data_dir: str | Path | None = None, in_memory: bool = True) -> dict[str, Any]:
    """Prepares (once) and loads ``lesions``: ``{"train", "validation", "test"}`` -> dict of arrays
    (``image`` uint8 ``[N, 32, 32, 1]``; ``lesion`` int32 ``[N]``; ``grade`` int32 ``[N]``, -1
    without a lesion; ``mask`` int32 ``[N, 32, 32]``), or, with ``in_memory=False``, a
    :class:`~mtl_jax.data.sources.RecordSource` per split."""
    casts = {"lesion": np.int32, "grade": np.int32, "mask": np.int32}
    return load_generated(Lesions, lesions_config(train_size, validation_size, test_size, seed), data_dir,
                          casts=casts, in_memory=in_memory)
