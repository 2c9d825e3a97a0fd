"""The generated ``clicks`` recommendation dataset as a tensorflow-datasets builder (no download).

``Clicks`` writes :mod:`mtl_jax.data.clicks` impressions into array_record files once and
:func:`load_clicks` reads them back with ``as_data_source()`` and grain
(:mod:`mtl_jax.data.generated`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from mtl_jax.data import clicks
from mtl_jax.data.generated import SplitsConfig, load_generated, splits_config


def clicks_config(train_size: int = 30000, validation_size: int = 5000, test_size: int = 10000,
                  seed: int = 0) -> SplitsConfig:
    """A configuration for any sizes and seed; its name encodes them, so each is cached apart."""
    return splits_config("clicks", train_size, validation_size, test_size, seed)


class Clicks(tfds.core.GeneratorBasedBuilder):
    """Impressions with click, conversion (observed after a click) and purchase labels."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    BUILDER_CONFIGS = [clicks_config()]

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=clicks.__doc__,
            features=tfds.features.FeaturesDict({
                "id": tfds.features.Scalar(np.int64),
                "fields": tfds.features.Tensor(shape=(len(clicks.FIELDS),), dtype=np.int32),
                "click": tfds.features.Scalar(np.int32),
                "conversion": tfds.features.Scalar(np.int32, doc="-1 where there was no click (not observed)"),
                "purchase": tfds.features.Scalar(np.int32),
            }),
            supervised_keys=None,
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # everything is generated
        config = self.builder_config
        return {split: self._generate_examples(n, config.seed, split) for split, n in config.sizes.items()}

    def _generate_examples(self, num_examples: int, seed: int, split: str):
        yield from clicks.generate(num_examples, seed, split)


def load_clicks(train_size: int = 30000, validation_size: int = 5000, test_size: int = 10000, seed: int = 0,
                data_dir: str | Path | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Prepares (once) and loads ``clicks``: ``{"train", "validation", "test"}`` -> dict of arrays
    (``fields`` int32 ``[N, 5]``; ``click``, ``conversion`` (-1: not observed), ``purchase`` int32 ``[N]``)."""
    return load_generated(Clicks, clicks_config(train_size, validation_size, test_size, seed), data_dir)
