"""The generated ``reviews`` text dataset (:mod:`mtl_jax.data.reviews`) as a tensorflow-datasets
builder: written to array_record once and read back like ``houses`` (no download)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from mtl_jax.data import reviews
from mtl_jax.data.generated import GeneratedBuilder, SplitsConfig, load_generated, splits_config


def reviews_config(train_size: int = 8000, validation_size: int = 1000, test_size: int = 2000,
                   seed: int = 0) -> SplitsConfig:
    """A configuration for any sizes and seed; its name encodes them."""
    return splits_config("reviews", train_size, validation_size, test_size, seed)


class Reviews(GeneratedBuilder):
    """Generated product reviews as token ids; tasks: sentiment (binary) and topic (4 classes)."""

    GENERATOR = reviews
    BUILDER_CONFIGS = [reviews_config()]

    def _features(self) -> tfds.features.FeaturesDict:
        return tfds.features.FeaturesDict({
            "id": tfds.features.Scalar(np.int64),
            "tokens": tfds.features.Tensor(shape=(reviews.MAX_LENGTH,), dtype=np.int32, encoding="bytes"),
            "sentiment": tfds.features.ClassLabel(names=reviews.SENTIMENTS),
            "topic": tfds.features.ClassLabel(names=reviews.TOPICS),
        })


def load_reviews(train_size: int = 8000, validation_size: int = 1000, test_size: int = 2000, seed: int = 0,
                 data_dir: str | Path | None = None, in_memory: bool = True) -> dict[str, Any]:
    """Prepares (once) and loads ``reviews``: ``{"train", "validation", "test"}`` -> dict of arrays
    (``tokens`` int32 ``[N, 48]``, 0 = padding; ``sentiment``, ``topic`` int32 ``[N]``), or, with
    ``in_memory=False``, a :class:`~mtl_jax.data.sources.RecordSource` per split."""
    return load_generated(Reviews, reviews_config(train_size, validation_size, test_size, seed), data_dir,
                          casts={"sentiment": np.int32, "topic": np.int32}, in_memory=in_memory)
