"""The embedded ``houses`` dataset as a tensorflow-datasets builder (no download, no TensorFlow).

``Houses`` generates :mod:`mtl_jax.data.houses` examples into array_record files once
(about 0.3 ms an example) and :func:`load_houses` reads them back with
``as_data_source()`` and grain into in-memory numpy arrays, sorted by example id
(:mod:`mtl_jax.data.generated`: cached under ``data_dir``, one folder per configuration).

``image`` and ``parts`` are stored as raw bytes (TFDS's ``Encoding.BYTES``, which TFDS advises
for larger tensors), so reading a record takes one ``np.frombuffer`` per array instead of
converting 16,384 protobuf integers (the default encoding's int64 lists): streamed batches are
decoded 2-3x faster (``benchmarks/README.md``, streaming).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from mtl_jax.data import houses
from mtl_jax.data.generated import GeneratedBuilder, SplitsConfig, load_generated, splits_config


def houses_config(train_size: int = 3000, validation_size: int = 500, test_size: int = 1000,
                  seed: int = 0) -> SplitsConfig:
    """A configuration for any sizes and seed; its name encodes them, so each is cached apart."""
    return splits_config("houses", train_size, validation_size, test_size, seed)


class Houses(GeneratedBuilder):
    """Procedural 64x64x3 houses with six tasks (price, kind, storeys, roof_colour, windows, parts)."""

    GENERATOR = houses
    BUILDER_CONFIGS = [houses_config()]
    VERSION = tfds.core.Version("2.0.0")
    RELEASE_NOTES = {"1.0.0": "First release.",
                     "2.0.0": "image and parts stored as raw bytes (Encoding.BYTES), not as int64 lists: "
                              "16 KB an example instead of 23 KB, decoded 2-3x faster (benchmarks/README.md)"}

    def _features(self) -> tfds.features.FeaturesDict:
        return tfds.features.FeaturesDict({
            "id": tfds.features.Scalar(np.int64),
            "image": tfds.features.Tensor(shape=(houses.SIZE, houses.SIZE, 3), dtype=np.uint8, encoding="bytes"),
            "price": tfds.features.Scalar(np.float32),
            "kind": tfds.features.ClassLabel(names=houses.KINDS),
            "storeys": tfds.features.ClassLabel(names=("one", "two", "three")),
            "roof_colour": tfds.features.ClassLabel(names=houses.ROOF_COLOURS),
            "windows": tfds.features.Scalar(np.float32),
            "parts": tfds.features.Tensor(shape=(houses.SIZE, houses.SIZE), dtype=np.uint8, encoding="bytes"),
        })


def load_houses(train_size: int = 3000, validation_size: int = 500, test_size: int = 1000, seed: int = 0,
                data_dir: str | Path | None = None, in_memory: bool = True) -> dict[str, Any]:
    """Prepares (once) and loads ``houses``: ``{"train", "validation", "test"}`` -> dict of arrays,
    or, with ``in_memory=False``, a :class:`~mtl_jax.data.sources.RecordSource` per split read
    batch by batch in the same order (``fit``, ``evaluate`` and ``predict`` take either).

    Labels are stored as the tasks expect them: ``image`` uint8 ``[N, 64, 64, 3]``,
    ``price``/``windows`` float32 ``[N]``, ``kind``/``storeys``/``roof_colour`` int ``[N]``,
    ``parts`` int ``[N, 64, 64]``.
    """
    casts = {**{key: np.int32 for key in ("kind", "storeys", "roof_colour", "parts")},
             **{key: np.float32 for key in ("price", "windows")}}
    return load_generated(Houses, houses_config(train_size, validation_size, test_size, seed), data_dir,
                          casts=casts, in_memory=in_memory)
