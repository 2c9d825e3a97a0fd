"""Normalisation statistics of a training split: mean and standard deviation, computed once in one
streamed pass and stored beside the prepared data.

Each statistic is taken over the examples and, for inputs with a channel axis (images
``[H, W, C]``), over every position: ``mean[c]``, ``std[c]`` per channel. A scalar target
(a regression) has one mean and one std. Batches are combined with Chan, Golub & LeVeque's
pairwise update (``M2 = M2_a + M2_b + delta^2 n_a n_b / n``) in float64, so a feature with a
large mean and a tiny spread (``1e8 + N(0, 1e-3)``) keeps its digits, which the one-pass
``E[x^2] - E[x]^2`` would cancel away.

A constant feature (std 0, or below ``1e-12`` of its scale) is normalised by 1 instead of
dividing by zero: its values become 0.

Large splits are estimated on a fixed random subset of at most ``max_examples`` examples (the
same subset every time), and the result is written as JSON once (atomically) and read back
afterwards: :func:`cached_statistics`.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from mtl_jax.files import write_json


class _Moments:
    """Running count, mean and sum of squared deviations (float64) of one key, over its values
    that are not NaN (NaN marks a missing label, e.g. a pixel without depth; an infinite value
    is not missing and makes the statistics non-finite, which is refused)."""

    def __init__(self):
        self.count, self.mean, self.m2 = None, None, None

    def add(self, values: np.ndarray, axes: tuple[int, ...]) -> None:
        values = np.asarray(values, np.float64)
        finite = ~np.isnan(values)
        count = finite.sum(axis=axes).astype(np.float64)
        if not count.any():
            return
        kept = np.where(finite, values, 0.0)
        mean = kept.sum(axis=axes) / np.maximum(count, 1.0)
        m2 = (np.where(finite, values - np.expand_dims(mean, axes), 0.0) ** 2).sum(axis=axes)
        if self.count is None:
            self.count, self.mean, self.m2 = count, mean, m2
            return
        total = self.count + count
        delta = mean - self.mean
        self.mean = self.mean + delta * (count / np.maximum(total, 1.0))
        self.m2 = self.m2 + m2 + delta ** 2 * (self.count * count / np.maximum(total, 1.0))
        self.count = total

    def result(self) -> dict:
        if self.count is None or not np.all(self.count > 0):
            raise ValueError("no value to take statistics of (every one is NaN, i.e. missing)")
        std = np.sqrt(self.m2 / self.count)
        scale = np.maximum(np.abs(self.mean), 1.0)
        std = np.where(std > 1e-12 * scale, std, 1.0)
        count = self.count.tolist() if np.ndim(self.count) else int(self.count)
        return {"mean": self.mean.tolist(), "std": std.tolist(), "count": count}


def reduced_axes(example_ndim: int) -> tuple[int, ...]:
    """Axes a statistic is taken over for examples of ``example_ndim`` dims, batch axis 0
    included: everything but the channel axis for ``[H, W, C]`` inputs, everything for
    ``[H, W]`` maps (depth), else the batch axis (per component of a vector)."""
    if example_ndim >= 3:
        return tuple(range(example_ndim))
    return tuple(range(example_ndim + 1)) if example_ndim == 2 else (0,)


def compute_statistics(read: Callable[[np.ndarray], Mapping[str, np.ndarray]], count: int, keys: Sequence[str], *,
                       max_examples: int = 20_000, seed: int = 0, batch_size: int = 256) -> dict[str, dict]:
    """``{key: {"mean", "std", "count"}}`` over ``count`` examples read by ``read(indices)``
    (e.g. ``RecordSource.read``), or a fixed random subset of ``max_examples`` of them."""
    if count < 1:
        raise ValueError("statistics need at least one example")
    indices = np.arange(count)
    if count > max_examples:
        indices = np.sort(np.random.default_rng(seed).choice(count, max_examples, replace=False))
    moments = {key: _Moments() for key in keys}
    for start in range(0, len(indices), batch_size):
        batch = read(indices[start:start + batch_size])
        for key in keys:
            values = np.asarray(batch[key])
            moments[key].add(values, reduced_axes(values.ndim - 1))
    result = {key: m.result() for key, m in moments.items()}
    for key, stats in result.items():
        if not np.all(np.isfinite(stats["mean"])) or not np.all(np.isfinite(stats["std"])):
            raise ValueError(f"the statistics of {key!r} are not finite (mean {stats['mean']}, std {stats['std']}): "
                             "the training split holds infinite values")
    return result


def cached_statistics(folder: str | Path, request: Mapping, compute: Callable[[], dict]) -> dict[str, dict]:
    """The statistics stored in ``folder`` for ``request`` (what was asked: dataset, split, keys,
    preprocessing), computed with ``compute()`` and written there the first time."""
    digest = hashlib.sha256(json.dumps(request, sort_keys=True, default=str).encode()).hexdigest()[:16]
    path = Path(folder) / f"statistics-{digest}.json"
    if path.exists():
        stored = json.loads(path.read_text())
        if stored.get("request") == json.loads(json.dumps(request, sort_keys=True, default=str)):
            return stored["statistics"]
    statistics = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, {"request": json.loads(json.dumps(request, sort_keys=True, default=str)),
                      "statistics": statistics})
    return statistics


def normalise(values: np.ndarray, stats: Mapping) -> np.ndarray:
    """``(values - mean) / std`` in float32 (per channel for images, broadcast on the last axis)."""
    mean = np.asarray(stats["mean"], np.float64)
    std = np.asarray(stats["std"], np.float64)
    return ((np.asarray(values, np.float64) - mean) / std).astype(np.float32)
