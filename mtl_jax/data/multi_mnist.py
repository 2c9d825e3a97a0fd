"""MultiMNIST (Sener & Koltun, 2018) from TFDS ``mnist``: two overlapping digits, left and right.

As in ``multi_digits`` (:mod:`mtl_jax.data.digits`, the same :func:`~mtl_jax.data.digits.compose`),
one digit is placed at the top left of a 36x36 canvas and another at the bottom right, each
shifted by up to ``SHIFT`` = 4 pixels, overlapping pixels taking the brighter value; the tasks
are ``left`` and ``right`` (10 classes each). Sener & Koltun then resize the canvas to 28x28;
here it stays 36x36 (no interpolation of the strokes).

Example ``i`` of a split has the split's digit ``i`` on the left and another digit of the same
split, drawn with ``default_rng([seed, split, i])``, on the right: every digit is a left digit
once per epoch, no example mixes splits, and the pairs are the same on every read (streamed,
nothing is materialised). MNIST has a train and a test split; the validation split is the last
10,000 training digits by default (``validation_split``), and the train split the first 50,000.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mtl_jax.data.digits import CLASSES, SHIFT, compose

SPLITS = ("train", "validation", "test")


class OverlappedPairs:
    """A random-access source of MultiMNIST examples over a source of MNIST digits."""

    def __init__(self, digits, seed: int, split_index: int):
        if len(digits) < 2:
            raise ValueError(f"a MultiMNIST split needs at least 2 digits, got {len(digits)}")
        self.digits, self.seed, self.split_index = digits, int(seed), int(split_index)

    def __len__(self) -> int:
        return len(self.digits)

    def _partner_and_shifts(self, index: int) -> tuple[int, np.ndarray]:
        rng = np.random.default_rng([self.seed, self.split_index, index])
        partner = int(rng.integers(len(self.digits) - 1))
        return partner + (partner >= index), rng.integers(0, SHIFT + 1, size=4)

    def __getitems__(self, indices: Sequence[int]) -> list[dict]:
        plans = [(int(i), *self._partner_and_shifts(int(i))) for i in indices]
        wanted = sorted({i for i, _, _ in plans} | {j for _, j, _ in plans})
        getitems = getattr(self.digits, "__getitems__", None)
        records = getitems(wanted) if getitems else [self.digits[k] for k in wanted]
        by_index = dict(zip(wanted, records))
        examples = []
        for i, j, shifts in plans:
            left, right = by_index[i], by_index[j]
            image = compose(np.asarray(left["image"])[..., 0], np.asarray(right["image"])[..., 0], shifts)
            examples.append({"image": image[..., None], "left": np.int32(left["label"]),
                             "right": np.int32(right["label"])})
        return examples

    def __getitem__(self, index: int) -> dict:
        return self.__getitems__([index])[0]


def load_multi_mnist(train_split: str = "train[:50000]", validation_split: str = "train[50000:]",
                     test_split: str = "test", seed: int = 0, download: bool = True, in_memory: bool = False,
                     threads: int = 1, data_dir: str | Path | None = None) -> dict[str, Any]:
    """``{split: RecordSource}`` of MultiMNIST pairs (``image`` uint8 ``[N, 36, 36, 1]``, ``left``
    and ``right`` int32), from TFDS ``mnist`` (prepared once; downloaded the first time unless
    ``download=False``); ``in_memory=True`` reads each split into arrays."""
    from mtl_jax.data.sources import RecordSource, head
    from mtl_jax.data.tfds_tasks import tfds_sources

    specs = {split: spec for split, spec in zip(SPLITS, (train_split, validation_split, test_split)) if spec}
    if "train" not in specs:
        raise ValueError("data.train_split is required")
    digits = tfds_sources("mnist", specs, data_dir, download)
    data = {split: RecordSource(OverlappedPairs(digits[split], seed, SPLITS.index(split)), threads=threads)
            for split in specs}
    return {split: head(source, len(source)) for split, source in data.items()} if in_memory else data


__all__ = ["CLASSES", "OverlappedPairs", "load_multi_mnist"]
