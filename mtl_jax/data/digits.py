"""MultiMNIST-style pairs of real handwritten digits (Sener & Koltun, 2018), offline.

Sener & Koltun ("Multi-Task Learning as Multi-Objective Optimization", NeurIPS 2018) build
MultiMNIST by putting one MNIST digit at the top left of a canvas and another at the bottom
right, each shifted at random, so that they overlap; the tasks are the left and the right
digit. Here the digits are the 1,797 real 8x8 handwritten digits that scikit-learn ships
inside its package (``sklearn.datasets.load_digits``: UCI's optical recognition of
handwritten digits, 43 writers; no download), so the dataset exists on any machine:

* each 8x8 digit (intensities 0-16) is enlarged 2x to 16x16 (bilinear) and scaled to 0-255;
* the left digit is placed at ``(r, c)``, the right one at ``(8 - r', 8 - c')`` of a 24x24
  canvas, with ``r, c, r', c'`` uniform in ``0..SHIFT``; where they overlap the pixel is the
  brighter of the two (Sener & Koltun's rule);
* tasks: ``left`` and ``right``, 10 classes each.

The 1,797 digit images are divided once into disjoint pools for the train (60 %),
validation (20 %) and test (20 %) splits (a fixed permutation, the same for every
configuration), so no test image is ever seen in training; a split's pairs are drawn from
its pool. Example ``i`` of a split depends only on ``default_rng([seed, split, i])``.
"""
from __future__ import annotations

import functools

import numpy as np

SIZE = 24
DIGIT = 16  # the 8x8 digits, enlarged 2x
SHIFT = 4
CLASSES = tuple(str(d) for d in range(10))
SPLITS = {"train": 0, "validation": 1, "test": 2}
POOL_FRACTIONS = {"train": 0.6, "validation": 0.2}


def _enlarge(images: np.ndarray) -> np.ndarray:
    """[N, 8, 8] -> [N, 16, 16] by bilinear interpolation at the pixel centres (edges held)."""
    centres = (np.arange(DIGIT) + 0.5) / 2 - 0.5
    low = np.clip(np.floor(centres).astype(int), 0, 7)
    high = np.clip(low + 1, 0, 7)
    frac = np.clip(centres - low, 0.0, 1.0)
    rows = images[:, low, :] * (1 - frac)[None, :, None] + images[:, high, :] * frac[None, :, None]
    return rows[:, :, low] * (1 - frac)[None, None, :] + rows[:, :, high] * frac[None, None, :]


@functools.lru_cache(maxsize=1)
def handwritten_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 digits: images [N, 8, 8] float32 (0-16) and labels [N] int64."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:
        raise ImportError("the multi_digits dataset reads the handwritten digits that scikit-learn ships: "
                          "pip install 'mtl_jax[digits]' (or scikit-learn)") from error
    loaded = load_digits()
    return loaded.images.astype(np.float32), loaded.target.astype(np.int64)


def pool_indices(count: int) -> dict[str, np.ndarray]:
    """The disjoint indices of ``count`` digits that each split draws its pairs from (fixed)."""
    order = np.random.default_rng(20180101).permutation(count)
    n_train = int(round(POOL_FRACTIONS["train"] * count))
    n_validation = int(round(POOL_FRACTIONS["validation"] * count))
    return {"train": order[:n_train], "validation": order[n_train:n_train + n_validation],
            "test": order[n_train + n_validation:]}


@functools.lru_cache(maxsize=1)
def digit_pools() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{split: (images [n, 16, 16] float32 in 0-255, labels [n])}``: each split's own digits."""
    images, labels = handwritten_digits()
    images = _enlarge(images) * (255.0 / 16.0)
    return {split: (images[index], labels[index]) for split, index in pool_indices(len(labels)).items()}


def compose(left: np.ndarray, right: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """The uint8 canvas of side ``d + 2 * SHIFT`` for ``d x d`` digits (24 for these 16x16 ones,
    36 for MNIST's 28x28) with ``left`` at ``shifts[:2]`` from the top left and ``right`` at
    ``shifts[2:]`` from the bottom right, overlapping pixels taking the maximum."""
    r, c, r2, c2 = (int(s) for s in shifts)
    digit = left.shape[0]
    size = digit + 2 * SHIFT
    canvas = np.zeros((size, size), np.float32)
    canvas[r:r + digit, c:c + digit] = left
    bottom, right_edge = size - digit - r2, size - digit - c2
    region = canvas[bottom:bottom + digit, right_edge:right_edge + digit]
    canvas[bottom:bottom + digit, right_edge:right_edge + digit] = np.maximum(region, right)
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8)


def generate(num_examples: int, seed: int = 0, split: str = "train"):
    """Yields ``(index, example)`` for examples ``0..num_examples-1`` of a split:
    ``image`` uint8 [24, 24, 1], ``left`` and ``right`` (0-9), ``id``."""
    images, labels = digit_pools()[split]
    for i in range(num_examples):
        rng = np.random.default_rng([seed, SPLITS[split], i])
        a, b = rng.choice(len(labels), size=2, replace=False)
        image = compose(images[a], images[b], rng.integers(0, SHIFT + 1, size=4))
        yield i, {"id": i, "image": image[:, :, None], "left": int(labels[a]), "right": int(labels[b])}
