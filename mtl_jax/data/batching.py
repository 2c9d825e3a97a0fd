"""Fixed-shape batches from in-memory arrays or a record source, shuffled per epoch under a seed.

A dataset here is a dict of numpy arrays sharing their first dimension, or a
:class:`~mtl_jax.data.sources.RecordSource` read lazily (see :mod:`mtl_jax.data.sources`). Every batch
has exactly ``batch_size`` rows: the last partial batch is filled with copies of real
rows and marked by ``batch["_valid"] == 0``, which every loss and metric honours, so
the compiled step sees one shape all run long. The order of epoch ``e`` is
``permutation(default_rng([seed, e]))``: it depends only on the seed and the epoch,
which makes runs reproducible and resumable mid-epoch.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Iterator, Mapping

import grain
import numpy as np

from mtl_jax.data.batch_streams import is_batch_stream
from mtl_jax.data.sources import is_record_source, num_examples, read
from mtl_jax.data.task_mixture import is_mixture
from mtl_jax.tasks import EXAMPLE_MASK_KEY

InputKey = str | tuple[str, ...]


def select_inputs(batch: Mapping[str, Any], input_key: InputKey):
    """The model's inputs: ``batch[key]``, or a dict of several keys."""
    if isinstance(input_key, str):
        return batch[input_key]
    return {k: batch[k] for k in input_key}

def steps_per_epoch(data, batch_size: int) -> int | None:
    """Batches per epoch; None for an iterable of batches without a length."""
    if is_batch_stream(data):
        return data.steps
    if is_mixture(data):
        return data.steps(batch_size)
    return math.ceil(num_examples(data) / max(1, min(batch_size, num_examples(data))))


def first_batch(data, batch_size: int) -> dict:
    """A batch of the shape every training step of ``data`` has (what the step is compiled for)."""
    if is_batch_stream(data):
        return data.first
    if is_mixture(data):
        return data.first_batch(batch_size)
    return next(batches(data, batch_size))


def epoch_order(n: int, seed: int | None, epoch: int) -> np.ndarray:
    """Example order for an epoch: a seeded permutation, or ``0..n-1`` when ``seed`` is None."""
    if seed is None:
        return np.arange(n)
    return np.random.default_rng([seed, epoch]).permutation(n)


def batches(data, batch_size: int, *, seed: int | None = None, epoch: int = 0,
            start_step: int = 0, check: Callable[[dict], None] | None = None,
            shard: tuple[int, int] = (0, 1)) -> Iterator[dict]:
    """Yields padded batches of ``batch_size`` rows with a ``_valid`` mask, from ``start_step`` on.

    ``data`` is a dict of arrays or a :class:`~mtl_jax.data.sources.RecordSource`; a record
    source's batches are read by grain's worker threads a few batches ahead (its ``threads``
    and ``prefetch``), each then passed to ``check`` (e.g. label ranges: a source is never read
    whole to check it up front). A ``batch_size`` larger than the dataset is clamped to its
    size: padding to it would only spend memory on masked copies. An iterable of batches
    (:class:`~mtl_jax.data.batch_streams.BatchStream`) yields its own batches: ``batch_size`` and
    ``seed`` do not apply. A :class:`~mtl_jax.data.task_mixture.TaskMixture` yields its mixed
    steps (``batch_size`` rows per dataset read), or with ``seed`` None every dataset once.

    ``shard=(index, count)``: this process's part of every global batch, rows
    ``[index * B / count, (index + 1) * B / count)`` of the batch above (padding and mask
    included), and only those are read: ``count`` processes together read each global batch
    once (the per-process input of multi-host training). ``batch_size`` must divide by ``count``.
    A task mixture's part is those rows of each dataset's batch (see ``TaskMixture.batches``).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    index, count = shard
    if not (isinstance(index, int) and isinstance(count, int) and 0 <= index < count):
        raise ValueError(f"shard must be (index, count) with 0 <= index < count, got {shard!r}")
    if is_batch_stream(data):  # the user's batches, as they come (padded to the first one's size)
        if count > 1 and data.shard != (index, count):
            why = ("whole: give a function (epoch, shard) that reads each process's part" if data.shard is None
                   else f"as part {data.shard}: the mesh's devices are not in the processes' order (build it from "
                        "jax.devices(), as make_mesh does)")
            raise ValueError(f"batches of process {index} of {count} were asked of batches read {why}")
        for batch in data.epoch(epoch, start_step):
            if check is not None:
                check(batch)
            yield batch
        return
    if is_mixture(data):
        for batch in data.batches(batch_size, seed=seed, epoch=epoch, start_step=start_step, shard=shard):
            if check is not None:
                check(batch)
            yield batch
        return
    n = num_examples(data)
    batch_size = max(1, min(batch_size, n))
    if batch_size % count:
        raise ValueError(f"batch_size {batch_size} does not split into {count} equal shards")
    order = epoch_order(n, seed, epoch)
    steps = math.ceil(n / batch_size)
    rows = slice(index * batch_size // count, (index + 1) * batch_size // count)

    def batch_at(step: int) -> dict:
        chosen = order[step * batch_size:(step + 1) * batch_size]
        valid = np.ones(batch_size, np.float32)
        if len(chosen) < batch_size:
            valid[len(chosen):] = 0.0
            chosen = np.concatenate([chosen, np.full(batch_size - len(chosen), chosen[0])])
        batch = read(data, chosen[rows])
        batch[EXAMPLE_MASK_KEY] = valid[rows]
        return batch

    if not is_record_source(data) or not data.threads:
        reader = map(batch_at, range(start_step, steps))
    elif start_step >= steps:
        reader = iter(())
    else:
        options = grain.ReadOptions(num_threads=data.threads, prefetch_buffer_size=max(data.prefetch, data.threads))
        reader = iter(grain.MapDataset.range(start_step, steps).map(batch_at).to_iter_dataset(options))
    for batch in reader:
        if check is not None:
            check(batch)
        yield batch
