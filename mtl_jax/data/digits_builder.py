"""The ``multi_digits`` dataset (:mod:`mtl_jax.data.digits`) as a tensorflow-datasets builder.

Generated from scikit-learn's shipped handwritten digits into array_record files once, read
back like ``houses`` (:mod:`mtl_jax.data.generated`); needs the optional dependency
scikit-learn (``pip install 'mtl_jax[digits]'``), nothing is downloaded.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from mtl_jax.data import digits
from mtl_jax.data.generated import GeneratedBuilder, SplitsConfig, load_generated, splits_config


def multi_digits_config(train_size: int = 10000, validation_size: int = 2000, test_size: int = 2000,
                        seed: int = 0) -> SplitsConfig:
    """A configuration for any numbers of pairs and seed; its name encodes them."""
    return splits_config("multi_digits", train_size, validation_size, test_size, seed)


class MultiDigits(GeneratedBuilder):
    """Two overlapping real handwritten digits per 24x24 image; tasks: the left and the right digit."""

    GENERATOR = digits
    BUILDER_CONFIGS = [multi_digits_config()]

    def _features(self) -> tfds.features.FeaturesDict:
        return tfds.features.FeaturesDict({
            "id": tfds.features.Scalar(np.int64),
            "image": tfds.features.Tensor(shape=(digits.SIZE, digits.SIZE, 1), dtype=np.uint8, encoding="bytes"),
            "left": tfds.features.ClassLabel(names=digits.CLASSES),
            "right": tfds.features.ClassLabel(names=digits.CLASSES),
        })


def load_multi_digits(train_size: int = 10000, validation_size: int = 2000, test_size: int = 2000, seed: int = 0,
                      data_dir: str | Path | None = None, in_memory: bool = True) -> dict[str, Any]:
    """Prepares (once) and loads ``multi_digits``: ``{"train", "validation", "test"}`` -> dict of
    arrays (``image`` uint8 ``[N, 24, 24, 1]``, ``left``/``right`` int32 ``[N]``), or, with
    ``in_memory=False``, a :class:`~mtl_jax.data.sources.RecordSource` per split. The pairs of a
    split are drawn from that split's own digit images (disjoint pools)."""
    digits.digit_pools()  # a missing scikit-learn is named before TFDS starts preparing
    casts = {"left": np.int32, "right": np.int32}
    return load_generated(MultiDigits, multi_digits_config(train_size, validation_size, test_size, seed), data_dir,
                          casts=casts, in_memory=in_memory)
