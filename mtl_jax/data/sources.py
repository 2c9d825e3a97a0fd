"""Where batches come from: in-memory arrays, or records read lazily from a random-access source.

Two kinds of dataset go into ``fit``, ``evaluate``, ``predict`` and
:func:`mtl_jax.data.batching.batches`:

* a dict of numpy arrays sharing their first dimension (the whole split in memory);
* a :class:`RecordSource`: any random-access source of example dicts, i.e. an object with
  ``__len__`` and ``__getitem__(i) -> {key: value}`` (and, when it has one,
  ``__getitems__(indices)`` for a batched read), such as a TFDS data source
  (``tfds.data_source(name, split=...)``, ``builder.as_data_source()[split]``) or a grain
  ``RandomAccessDataSource``. Only the records of the batch being assembled are read (and a
  few prefetched batches, read by grain's worker threads), so memory is bounded by the batch,
  not the dataset.

Both are read through the same pure sampler: batch ``k`` of epoch ``e`` holds the examples
``permutation(default_rng([seed, e]))[k*B:(k+1)*B]`` of the source's index order, so a source
and the arrays read from it in the same order give the same batches, and a resume only needs
``(epoch, step_in_epoch)``.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np


class RecordSource:
    """Records of a random-access source, read on demand and stacked into batch arrays.

    Args:
      source: ``len(source)`` examples, ``source[i]`` a dict of arrays or scalars (TFDS and
        grain data sources are).
      keys: the keys to keep (default: every key of the first record); others are dropped
        before stacking, e.g. a TFDS example's unused features.
      transform: optional per-example function applied to each record after reading
        (decoding, normalisation, augmentation); it must return a dict and be deterministic
        for resumed runs to repeat the uninterrupted one.
      dtypes: optional ``{key: dtype}`` each stacked batch array is cast to (once per batch,
        not per record: e.g. TFDS's int64 labels to int32).
      order: optional index map: example ``i`` of this source is ``source[order[i]]`` (e.g.
        :func:`order_by_key` to read a sharded split in the order of its ``id`` field).
      threads: grain worker threads that read batches ahead of the training step (0: read in
        the caller's thread). One is fastest when decoding is Python-bound, as TFDS's is
        (``benchmarks/README.md``: 2 or 4 threads contend for the GIL); more help sources
        on remote storage, whose reads wait on the network.
      prefetch: batches read ahead when ``threads > 0`` (at least one per thread).
    """

    def __init__(self, source, *, keys: Sequence[str] | None = None,
                 transform: Callable[[dict], dict] | None = None, order: np.ndarray | None = None,
                 threads: int = 1, prefetch: int = 4, dtypes: Mapping[str, Any] | None = None):
        if not (hasattr(source, "__len__") and hasattr(source, "__getitem__")):
            raise TypeError(f"a record source needs __len__ and __getitem__ (a TFDS or grain data source), "
                            f"got {type(source).__name__}")
        if threads < 0 or prefetch < 1:
            raise ValueError(f"threads must be >= 0 and prefetch >= 1, got threads={threads}, prefetch={prefetch}")
        self.source, self.transform, self.threads, self.prefetch = source, transform, threads, prefetch
        self.dtypes = {key: np.dtype(dtype) for key, dtype in (dtypes or {}).items()}
        self.order = None if order is None else np.asarray(order, np.int64)
        if self.order is not None and (self.order.ndim != 1 or len(self.order) > len(source)):
            raise ValueError(f"order must be a 1-d index map of at most {len(source)} entries, got shape "
                             f"{self.order.shape}")
        self.keys = tuple(keys) if keys is not None else None
        if self.keys is None and len(self) > 0:
            self.keys = tuple(self._records(np.zeros(1, np.int64))[0])

    def __len__(self) -> int:
        return len(self.order) if self.order is not None else len(self.source)

    def _records(self, indices: np.ndarray) -> list[dict]:
        indices = indices if self.order is None else self.order[indices]
        getitems = getattr(self.source, "__getitems__", None)
        records = list(getitems([int(i) for i in indices])) if getitems else [self.source[int(i)] for i in indices]
        if self.transform is not None:
            records = [self.transform(dict(r)) for r in records]
        return records

    def read(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        """The examples at ``indices`` as ``{key: array [len(indices), ...]}``."""
        records = self._records(np.asarray(indices, np.int64))
        missing = [k for k in self.keys if k not in records[0]]
        if missing:
            raise KeyError(f"records have no key(s) {missing}; they have {sorted(records[0])}")
        arrays = {k: np.stack([np.asarray(r[k]) for r in records]) for k in self.keys}
        return {k: v.astype(self.dtypes[k], copy=False) if k in self.dtypes else v for k, v in arrays.items()}

    def __repr__(self) -> str:
        return f"RecordSource({type(self.source).__name__}, {len(self)} examples, keys={self.keys})"


def subset(data, indices: np.ndarray):
    """The examples at ``indices`` as a dataset of the same kind: a dict of arrays (copied), or a
    record source reading only those records (nothing is read now)."""
    indices = np.asarray(indices, np.int64)
    if is_record_source(data):
        order = indices if data.order is None else data.order[indices]
        return RecordSource(data.source, keys=data.keys, transform=data.transform, order=order,
                            threads=data.threads, prefetch=data.prefetch, dtypes=data.dtypes)
    return {k: np.take(v, indices, axis=0) for k, v in data.items()}


def order_by_key(source, key: str = "id") -> np.ndarray:
    """The permutation that reads ``source`` in increasing ``record[key]`` (stable): the order
    :func:`mtl_jax.data.generated.read_split` gives the in-memory arrays. Reads every record
    once, keeping only that key."""
    getitems = getattr(source, "__getitems__", None)
    values = []
    for start in range(0, len(source), 1024):  # batched reads where the source has them
        indices = range(start, min(start + 1024, len(source)))
        records = getitems(list(indices)) if getitems else [source[i] for i in indices]
        values += [np.asarray(record[key]) for record in records]
    return np.argsort(np.asarray(values), kind="stable")


def is_record_source(data: Any) -> bool:
    return isinstance(data, RecordSource)


def num_examples(data) -> int:
    """The number of examples of a dataset: a record source's length, or the shared first
    dimension of a dict of arrays (an error names the keys that disagree)."""
    if is_record_source(data):
        return len(data)
    from mtl_jax.data.batch_streams import is_batch_stream

    if is_batch_stream(data):
        raise TypeError("the number of examples of an iterable of batches is not known in advance")
    if not isinstance(data, Mapping):
        raise TypeError(f"a dataset is a dict of arrays or a RecordSource, got {type(data).__name__}")
    sizes = {k: len(v) for k, v in data.items()}
    if not sizes:
        raise ValueError("empty dataset: no arrays given")
    if len(set(sizes.values())) != 1:
        raise ValueError(f"arrays disagree on the number of examples: {sizes}")
    return next(iter(sizes.values()))


def read(data, indices: np.ndarray) -> dict[str, np.ndarray]:
    """The examples at ``indices`` of either kind of dataset, as arrays."""
    if is_record_source(data):
        return data.read(indices)
    return {k: np.take(v, indices, axis=0) for k, v in data.items()}


def head(data, count: int) -> dict[str, np.ndarray]:
    """The first ``count`` examples (all of them when fewer) as arrays: what checks read of a source
    (of an iterable of batches: its first batch's; of a task mixture: its first dataset's, with
    every task's target)."""
    from mtl_jax.data.batch_streams import is_batch_stream
    from mtl_jax.data.task_mixture import is_mixture

    if is_batch_stream(data) or is_mixture(data):
        first = data.first if is_batch_stream(data) else next(data.batches(count, seed=None))
        valid = first["_valid"] > 0
        return {k: v[valid][:count] for k, v in first.items() if k != "_valid"}
    return read(data, np.arange(min(count, num_examples(data))))
