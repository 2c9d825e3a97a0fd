"""Batches the user makes: any Python iterable of batch dicts, the third kind of dataset.

``fit``, ``evaluate`` and ``predict`` take, besides arrays and record sources
(:mod:`mtl_jax.data.sources`), batches made elsewhere (tf.data, grain, a PyTorch loader
turned into numpy, a generator), as:

* a re-iterable (a list of batches, any object whose ``__iter__`` starts again): read again
  from the start every epoch;
* a function ``epoch -> iterable of batches``: the batches of each epoch (e.g. your own
  shuffling by ``(seed, epoch)``);
* an iterator or generator: it can be read only once, so it trains one epoch;
* a function ``(epoch, shard) -> iterable of batches`` (its second parameter named ``shard``):
  with several processes (:mod:`mtl_jax.distributed`) each process's call reads only its part
  of the data. ``shard = (index, count)`` is this process's place (``jax.process_index()``,
  ``jax.process_count()``; ``(0, 1)`` with one process), and each batch it yields holds only
  rows ``[index * B / count, (index + 1) * B / count)`` of the global batch of ``B`` rows (e.g.
  ``tf.data``'s ``shard(count, index)`` before batching ``B / count``). Every process yields
  the same number of batches; each part is padded with masked rows to the size of the first
  (so the parts of a short last batch may differ in size). The global batch, assembled from
  every process's part, is what one process reading whole batches trains on. Training and
  evaluation take it (with a mesh over every process's devices); ``predict`` reads whole
  batches (give it arrays, a record source or batches without ``shard``).

Each batch is a dict of arrays sharing their first dimension: the model's input(s), each
task's target (and optionally ``<task>_mask`` or the example mask ``_valid``). The first batch
fixes the shapes the step is compiled for: a smaller batch (typically the last) is padded to
its size with masked copies of its first row, so nothing recompiles; a larger one is refused.
Each batch is checked like any data (targets, label ranges, input shape) as it arrives.

Resuming mid-epoch skips the epoch's first ``step_in_epoch`` batches: a resumed run repeats an
uninterrupted one exactly when the stream yields the same batches again.
"""
from __future__ import annotations

import inspect
import itertools
from typing import Any, Callable, Iterable, Iterator, Mapping

import numpy as np

from mtl_jax.distributed import process_position
from mtl_jax.tasks import EXAMPLE_MASK_KEY


def rows(batch: Mapping[str, Any], where: str = "batch") -> int:
    """The shared first dimension of a batch's arrays (an error names the keys that disagree)."""
    if not isinstance(batch, Mapping) or not batch:
        raise TypeError(f"{where}: a batch is a non-empty dict of arrays, got {type(batch).__name__}")
    sizes = {k: (np.shape(v)[0] if np.ndim(v) else None) for k, v in batch.items()}
    if None in sizes.values() or len(set(sizes.values())) != 1:
        raise ValueError(f"{where}: a batch's arrays must share their first dimension, got {sizes}")
    return next(iter(sizes.values()))


def pad_batch(batch: Mapping[str, Any], size: int, where: str = "batch") -> dict[str, np.ndarray]:
    """``batch`` as numpy arrays of exactly ``size`` rows with the example mask ``_valid``:
    missing rows are copies of the first, masked out."""
    count = rows(batch, where)
    if count > size:
        raise ValueError(f"{where} has {count} examples, more than the first batch's {size}: batches may only "
                         "shrink (the step is compiled for the first batch's shape)")
    arrays = {k: np.asarray(v) for k, v in batch.items()}
    valid = arrays.pop(EXAMPLE_MASK_KEY, np.ones(count, np.float32)).astype(np.float32)
    if count < size:
        filler = np.zeros(size - count, np.int64)
        arrays = {k: np.concatenate([v, v[filler]]) for k, v in arrays.items()}
        valid = np.concatenate([valid, np.zeros(size - count, np.float32)])
    arrays[EXAMPLE_MASK_KEY] = valid
    return arrays


class BatchStream:
    """A user's batches (see the module docstring), read epoch by epoch."""

    def __init__(self, data: Iterable[Mapping] | Callable[[int], Iterable[Mapping]]):
        self.data = data
        # a function of (epoch, shard): this process's rows of every batch (None: whole batches)
        self.shard: tuple[int, int] | None = process_position() if callable(data) and takes_shard(data) else None
        if callable(data):
            self.kind = "function"
            first = next(iter(self._call(0)), None)
        elif iter(data) is data:
            self.kind = "iterator"
            first = next(data, None)
            self._rest: Iterator | None = itertools.chain([first], data) if first is not None else iter(())
        else:
            self.kind = "iterable"
            first = next(iter(data), None)
        if first is None:
            raise ValueError("the iterable of batches yielded no batch")
        self.batch_size = rows(first, "the first batch")
        self.first = pad_batch(first, self.batch_size, "the first batch")

    def _call(self, epoch: int):
        return self.data(epoch) if self.shard is None else self.data(epoch, shard=self.shard)

    @property
    def global_rows(self) -> int | None:
        """Rows of the global batch when each process reads its own part (else None)."""
        return None if self.shard is None else self.batch_size * self.shard[1]

    @property
    def steps(self) -> int | None:
        """Batches per epoch, when the iterable has a length."""
        return len(self.data) if self.kind == "iterable" and hasattr(self.data, "__len__") else None

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[dict[str, np.ndarray]]:
        """The padded batches of ``epoch`` from ``start_step`` on."""
        if self.kind == "function":
            source = iter(self._call(epoch))
        elif self.kind == "iterator":
            if self._rest is None:
                raise ValueError(f"epoch {epoch + 1}: an iterator of batches can be read only once (one epoch); pass "
                                 "a list or a function epoch -> batches to train several epochs")
            source, self._rest = self._rest, None
        else:
            source = iter(self.data)
        for index, batch in enumerate(itertools.islice(source, start_step, None), start=start_step):
            yield pad_batch(batch, self.batch_size, f"batch {index} of epoch {epoch + 1}")

    def __repr__(self) -> str:
        shard = "" if self.shard is None else f", shard={self.shard}"
        return f"BatchStream({self.kind}, batch_size={self.batch_size}, steps={self.steps}{shard})"


def takes_shard(function: Callable) -> bool:
    """Whether ``function`` takes the keyword ``shard`` (a function ``(epoch, shard)`` of batches)."""
    try:
        return "shard" in inspect.signature(function).parameters
    except (TypeError, ValueError):  # no signature (some builtins)
        return False


def is_batch_stream(data: Any) -> bool:
    return isinstance(data, BatchStream)


def as_dataset(data: Any, where: str = "data"):
    """``data`` as one of the three kinds of dataset: a dict of arrays and a record source are
    returned as they are, an iterable of batches or a function of the epoch becomes a
    :class:`BatchStream`."""
    from mtl_jax.data.sources import is_record_source
    from mtl_jax.data.task_mixture import is_mixture

    if data is None or isinstance(data, Mapping) or is_record_source(data) or is_batch_stream(data) or is_mixture(data):
        return data
    if isinstance(data, (str, bytes, np.ndarray)) or not (callable(data) or isinstance(data, Iterable)):
        raise TypeError(f"{where}: expected a dict of arrays, a RecordSource, or an iterable of batch dicts, got "
                        f"{type(data).__name__}")
    return BatchStream(data)
