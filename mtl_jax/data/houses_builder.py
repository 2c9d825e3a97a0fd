"""The embedded ``houses`` dataset as a tensorflow-datasets builder (no download, no TensorFlow).

``Houses`` generates :mod:`mtl_jax.data.houses` examples into array_record files once
(about 0.3 ms an example) and :func:`load_houses` reads them back with
``as_data_source()`` and grain into in-memory numpy arrays, sorted by example id.
Prepared data are cached under ``data_dir`` (default ``$MTL_JAX_DATA_DIR`` or
``~/.cache/mtl_jax/tensorflow_datasets``), one folder per configuration.
"""
from __future__ import annotations

import os
from pathlib import Path

import grain
import numpy as np
import tensorflow_datasets as tfds

from mtl_jax.data import houses


class HousesConfig(tfds.core.BuilderConfig):
    """Split sizes and the generation seed of a ``houses`` variant."""

    def __init__(self, *, train_size: int, validation_size: int, test_size: int, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.sizes = {"train": train_size, "validation": validation_size, "test": test_size}
        self.seed = seed


def houses_config(train_size: int = 3000, validation_size: int = 500, test_size: int = 1000,
                  seed: int = 0) -> HousesConfig:
    """A configuration for any sizes and seed; its name encodes them, so each is cached apart."""
    for split, n in (("train", train_size), ("validation", validation_size), ("test", test_size)):
        if n < 1:
            raise ValueError(f"houses: the {split} split needs at least 1 example, got {n}")
    return HousesConfig(name=f"n{train_size}-{validation_size}-{test_size}-seed{seed}",
                        train_size=train_size, validation_size=validation_size, test_size=test_size, seed=seed,
                        description="procedural houses with sizes and seed as named")


class Houses(tfds.core.GeneratorBasedBuilder):
    """Procedural 64x64x3 houses with six tasks (price, kind, storeys, roof_colour, windows, parts)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    BUILDER_CONFIGS = [houses_config()]

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=houses.__doc__,
            features=tfds.features.FeaturesDict({
                "id": tfds.features.Scalar(np.int64),
                "image": tfds.features.Tensor(shape=(houses.SIZE, houses.SIZE, 3), dtype=np.uint8),
                "price": tfds.features.Scalar(np.float32),
                "kind": tfds.features.ClassLabel(names=houses.KINDS),
                "storeys": tfds.features.ClassLabel(names=("one", "two", "three")),
                "roof_colour": tfds.features.ClassLabel(names=houses.ROOF_COLOURS),
                "windows": tfds.features.Scalar(np.float32),
                "parts": tfds.features.Tensor(shape=(houses.SIZE, houses.SIZE), dtype=np.uint8),
            }),
            supervised_keys=None,
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # everything is generated
        config = self.builder_config
        return {split: self._generate_examples(n, config.seed, split) for split, n in config.sizes.items()}

    def _generate_examples(self, num_examples: int, seed: int, split: str):
        yield from houses.generate(num_examples, seed, split)


def default_data_dir() -> Path:
    return Path(os.environ.get("MTL_JAX_DATA_DIR", Path.home() / ".cache" / "mtl_jax" / "tensorflow_datasets"))


def read_split(source, batch_size: int = 1024) -> dict[str, np.ndarray]:
    """Reads a random-access source (e.g. ``builder.as_data_source()[split]``) into numpy arrays.

    Records are batched by grain and the arrays sorted by ``id`` when there is one, so the
    order does not depend on how the files were sharded.
    """
    dataset = grain.MapDataset.source(source).batch(batch_size)
    parts = [dataset[i] for i in range(len(dataset))]
    arrays = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    if "id" in arrays:
        order = np.argsort(arrays["id"], kind="stable")
        arrays = {k: v[order] for k, v in arrays.items()}
    return arrays


def load_houses(train_size: int = 3000, validation_size: int = 500, test_size: int = 1000, seed: int = 0,
                data_dir: str | Path | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Prepares (once) and loads ``houses``: ``{"train", "validation", "test"}`` -> dict of arrays.

    Labels are stored as the tasks expect them: ``image`` uint8 ``[N, 64, 64, 3]``,
    ``price``/``windows`` float32 ``[N]``, ``kind``/``storeys``/``roof_colour`` int ``[N]``,
    ``parts`` int ``[N, 64, 64]``.
    """
    config = houses_config(train_size, validation_size, test_size, seed)
    if config.name in Houses.builder_configs:  # a registered config must be asked for by name
        config = config.name
    builder = Houses(config=config, data_dir=str(data_dir or default_data_dir()), file_format="array_record")
    if not builder.is_prepared():
        tfds.disable_progress_bar()  # generation takes seconds; per-split bars only clutter the log
        builder.download_and_prepare()
    sources = builder.as_data_source()
    out = {}
    for split in ("train", "validation", "test"):
        arrays = read_split(sources[split])
        for key in ("kind", "storeys", "roof_colour", "parts"):
            arrays[key] = arrays[key].astype(np.int32)
        for key in ("price", "windows"):
            arrays[key] = arrays[key].astype(np.float32)
        out[split] = arrays
    return out
