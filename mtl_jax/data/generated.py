"""What the project's generated tensorflow-datasets builders share: split sizes, preparation, reading.

A generated dataset (``houses``, ``clicks``) is a ``tfds.core.GeneratorBasedBuilder`` whose
configuration is its split sizes and generation seed (:class:`SplitsConfig`, named after
them so each variant is cached apart). :func:`load_generated` prepares it once as
array_record files under ``data_dir`` (default ``$MTL_JAX_DATA_DIR`` or
``~/.cache/mtl_jax/tensorflow_datasets``) and reads every split back through
``as_data_source()`` and grain, into numpy arrays or as record sources read batch by batch
(no TensorFlow, no download).
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sys
from pathlib import Path
from typing import Any, Mapping

import grain
import numpy as np
import tensorflow_datasets as tfds

from mtl_jax import distributed
from mtl_jax.data.sources import RecordSource, order_by_key

SPLIT_NAMES = ("train", "validation", "test")


class SplitsConfig(tfds.core.BuilderConfig):
    """Split sizes and the generation seed of a generated dataset's variant."""

    def __init__(self, *, train_size: int, validation_size: int, test_size: int, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.sizes = {"train": train_size, "validation": validation_size, "test": test_size}
        self.seed = seed


def splits_config(dataset: str, train_size: int, validation_size: int, test_size: int, seed: int) -> SplitsConfig:
    """A configuration for any sizes and seed; its name encodes them."""
    for split, n in (("train", train_size), ("validation", validation_size), ("test", test_size)):
        if n < 1:
            raise ValueError(f"{dataset}: the {split} split needs at least 1 example, got {n}")
    return SplitsConfig(name=f"n{train_size}-{validation_size}-{test_size}-seed{seed}",
                        train_size=train_size, validation_size=validation_size, test_size=test_size, seed=seed,
                        description=f"generated {dataset} with sizes and seed as named")


class GeneratedBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A builder whose examples come from a generator module (no download).

    Subclasses set ``GENERATOR`` (a module with a docstring and
    ``generate(num_examples, seed, split)`` yielding ``(key, example)``), ``BUILDER_CONFIGS``
    and :meth:`_features`; the splits and sizes come from the :class:`SplitsConfig`.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    GENERATOR = None

    def _features(self) -> tfds.features.FeaturesDict:
        raise NotImplementedError

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(builder=self, description=self.GENERATOR.__doc__, features=self._features(),
                                     supervised_keys=None)

    def _split_generators(self, dl_manager):
        del dl_manager  # everything is generated
        config = self.builder_config
        return {split: self._generate_examples(n, config.seed, split) for split, n in config.sizes.items()}

    def _generate_examples(self, num_examples: int, seed: int, split: str):
        yield from self.GENERATOR.generate(num_examples, seed, split)

    # TFDS prints "Downloading and preparing dataset Unknown size ..." and "... downloaded and
    # prepared" around preparation; nothing is downloaded here, so say what happens instead.
    def _log_download_bytes(self) -> None:
        sizes = ", ".join(f"{split} {n}" for split, n in self.builder_config.sizes.items())
        print(f"generating {self.name} ({sizes} examples, seed {self.builder_config.seed}) into {self.data_dir}",
              file=sys.stderr, flush=True)

    def _log_download_done(self) -> None:
        pass


@contextlib.contextmanager
def quiet_absl():
    """TFDS's absl warnings and info lines off while a generated builder is made and read."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


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


def _prepared(make_builder, root: Path):
    """A builder made by ``make_builder`` whose data are prepared: generated here unless they are
    already, under a lock file in ``root`` so that processes sharing the folder (e.g. several
    ``mtl-jax compare`` workers) generate one dataset once, the others waiting for it."""
    builder = make_builder()
    if builder.is_prepared():
        return builder
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{builder.info.full_name.replace('/', '_')}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # waits while another process generates it
        builder = make_builder()
        if not builder.is_prepared():
            tfds.disable_progress_bar()  # generation takes seconds; per-split bars only clutter the log
            builder.download_and_prepare()
    return builder


def load_generated(builder_class, config: SplitsConfig, data_dir: str | Path | None = None, *,
                   casts: Mapping[str, Any] | None = None, in_memory: bool = True) -> dict[str, Any]:
    """Prepares ``builder_class`` with ``config`` once and returns ``{split: dataset}``.

    ``in_memory=True``: each split as a dict of numpy arrays (:func:`read_split`).
    ``in_memory=False``: each split as a :class:`~mtl_jax.data.sources.RecordSource` over the
    builder's ``as_data_source()``, read batch by batch in the same example order (by ``id``,
    found in one pass over the split), so both give the same batches and runs.
    ``casts``: ``{key: dtype}`` applied to the arrays (to each batch when streaming).
    """
    if config.name in builder_class.builder_configs:  # a registered config must be asked for by name
        config = config.name
    root = Path(data_dir or default_data_dir())

    def make_builder():
        return builder_class(config=config, data_dir=str(root), file_format="array_record")

    with quiet_absl():  # "Using custom data configuration", "Downloading and preparing": nothing downloads
        # Several processes of one run: process 0 generates first, the others wait for it; a
        # process whose folder is still empty then (a disk of its own host) generates its own
        # copy, the same data from the same config. Independent processes sharing the folder
        # take turns through a lock file (_prepared).
        builder = _prepared(make_builder, root) if distributed.writes_files() else make_builder()
        if distributed.process_count() > 1:
            distributed.wait_for_all(f"mtl_jax generated {builder.info.full_name}")
            builder = _prepared(make_builder, root)
        sources = builder.as_data_source()
    casts = dict(casts or {})

    def cast(example: dict) -> dict:
        return {**example, **{k: np.asarray(example[k]).astype(t) for k, t in casts.items()}}

    if not in_memory:
        return {split: RecordSource(sources[split], dtypes=casts, order=order_by_key(sources[split], "id"))
                for split in SPLIT_NAMES}
    return {split: cast(read_split(sources[split])) for split in SPLIT_NAMES}
