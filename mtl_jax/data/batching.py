"""Fixed-shape batches from in-memory arrays, shuffled per epoch under a seed.

A dataset here is a dict of numpy arrays sharing their first dimension. Every batch
has exactly ``batch_size`` rows: the last partial batch is filled with copies of real
rows and marked by ``batch["_valid"] == 0``, which every loss and metric honours, so
the compiled step sees one shape all run long. The order of epoch ``e`` is
``permutation(default_rng([seed, e]))``: it depends only on the seed and the epoch,
which makes runs reproducible and resumable mid-epoch.
"""
from __future__ import annotations

import math
from typing import Any, Iterator, Mapping

import numpy as np

from mtl_jax.tasks import EXAMPLE_MASK_KEY

InputKey = str | tuple[str, ...]


def select_inputs(batch: Mapping[str, Any], input_key: InputKey):
    """The model's inputs: ``batch[key]``, or a dict of several keys."""
    if isinstance(input_key, str):
        return batch[input_key]
    return {k: batch[k] for k in input_key}

Arrays = Mapping[str, np.ndarray]


def num_examples(arrays: Arrays) -> int:
    """The shared first dimension of ``arrays`` (an error names the keys that disagree)."""
    sizes = {k: len(v) for k, v in arrays.items()}
    if not sizes:
        raise ValueError("empty dataset: no arrays given")
    if len(set(sizes.values())) != 1:
        raise ValueError(f"arrays disagree on the number of examples: {sizes}")
    return next(iter(sizes.values()))


def steps_per_epoch(arrays: Arrays, batch_size: int) -> int:
    return math.ceil(num_examples(arrays) / batch_size)


def epoch_order(n: int, seed: int | None, epoch: int) -> np.ndarray:
    """Example order for an epoch: a seeded permutation, or ``0..n-1`` when ``seed`` is None."""
    if seed is None:
        return np.arange(n)
    return np.random.default_rng([seed, epoch]).permutation(n)


def batches(arrays: Arrays, batch_size: int, *, seed: int | None = None, epoch: int = 0,
            start_step: int = 0) -> Iterator[dict]:
    """Yields padded batches of ``batch_size`` rows with a ``_valid`` mask, from ``start_step`` on.

    A ``batch_size`` larger than the dataset is clamped to its size: padding to it would only
    spend memory on masked copies.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = num_examples(arrays)
    batch_size = max(1, min(batch_size, n))
    order = epoch_order(n, seed, epoch)
    for start in range(start_step * batch_size, n, batch_size):
        index = order[start:start + batch_size]
        valid = np.ones(batch_size, np.float32)
        if len(index) < batch_size:
            valid[len(index):] = 0.0
            index = np.concatenate([index, np.full(batch_size - len(index), index[0])])
        batch = {k: np.take(v, index, axis=0) for k, v in arrays.items()}
        batch[EXAMPLE_MASK_KEY] = valid
        yield batch
