"""The generated ``clicks`` recommendation dataset as a tensorflow-datasets builder (no download).

``Clicks`` writes :mod:`mtl_jax.data.clicks` impressions into array_record files once and
:func:`load_clicks` reads them back with ``as_data_source()`` and grain
(:mod:`mtl_jax.data.generated`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from mtl_jax.data import clicks
from mtl_jax.data.generated import GeneratedBuilder, SplitsConfig, load_generated, splits_config


def clicks_config(train_size: int = 30000, validation_size: int = 5000, test_size: int = 10000,
                  seed: int = 0) -> SplitsConfig:
    """A configuration for any sizes and seed; its name encodes them, so each is cached apart."""
    return splits_config("clicks", train_size, validation_size, test_size, seed)


class Clicks(GeneratedBuilder):
    """Impressions with click, conversion (observed after a click) and purchase labels."""

    GENERATOR = clicks
    BUILDER_CONFIGS = [clicks_config()]

    def _features(self) -> tfds.features.FeaturesDict:
        return tfds.features.FeaturesDict({
            "id": tfds.features.Scalar(np.int64),
            "fields": tfds.features.Tensor(shape=(len(clicks.FIELDS),), dtype=np.int32),
            "click": tfds.features.Scalar(np.int32),
            "conversion": tfds.features.Scalar(np.int32, doc="-1 where there was no click (not observed)"),
            "purchase": tfds.features.Scalar(np.int32),
        })


def load_clicks(train_size: int = 30000, validation_size: int = 5000, test_size: int = 10000, seed: int = 0,
                data_dir: str | Path | None = None, in_memory: bool = True) -> dict[str, Any]:
    """Prepares (once) and loads ``clicks``: ``{"train", "validation", "test"}`` -> dict of arrays
    (``fields`` int32 ``[N, 5]``; ``click``, ``conversion`` (-1: not observed), ``purchase`` int32 ``[N]``),
    or, with ``in_memory=False``, a :class:`~mtl_jax.data.sources.RecordSource` per split."""
    return load_generated(Clicks, clicks_config(train_size, validation_size, test_size, seed), data_dir,
                          in_memory=in_memory)
