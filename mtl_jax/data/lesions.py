"""Generated medical-style scans: lesion detection, grading and segmentation (offline).

Each 32x32 single-channel image is smooth "tissue" (a random low-frequency field plus
pixel noise). Half of them hold one lesion: a brighter blob with a soft edge, elliptical
with an irregular (sinusoidally modulated) boundary, of radius 2.5-9 px and contrast
0.12-0.45 (faint, small lesions are hard to see, as in screening). Tasks, as a detection +
grading study has them:

* ``lesion`` (binary): a lesion is present;
* ``grade`` (3 classes, only where a lesion is present, ``-1`` = not applicable, so the
  loss ignores those images): severity from the lesion's radius, 0 mild (< 4.5 px),
  1 moderate (< 6.5 px), 2 severe;
* ``mask`` (segmentation, 2 classes per pixel): the lesion's pixels, the auxiliary dense task.

Example ``i`` of a split depends only on ``default_rng([seed, split, i])``.
"""
from __future__ import annotations

import numpy as np

SIZE = 32
GRADES = ("mild", "moderate", "severe")
GRADE_RADII = (4.5, 6.5)  # radius thresholds between grades
SPLITS = {"train": 0, "validation": 1, "test": 2}
_YY, _XX = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)


def _tissue(rng: np.random.Generator) -> np.ndarray:
    """A smooth random field in about [0.2, 0.6]: a 5x5 grid of values interpolated bilinearly."""
    grid = rng.uniform(0.2, 0.6, (5, 5))
    position = _YY / (SIZE - 1) * 4, _XX / (SIZE - 1) * 4
    r0, c0 = np.minimum(position[0].astype(int), 3), np.minimum(position[1].astype(int), 3)
    fr, fc = position[0] - r0, position[1] - c0
    top = grid[r0, c0] * (1 - fc) + grid[r0, c0 + 1] * fc
    bottom = grid[r0 + 1, c0] * (1 - fc) + grid[r0 + 1, c0 + 1] * fc
    return top * (1 - fr) + bottom * fr


def scan(rng: np.random.Generator) -> dict:
    """One image and its labels (see the module docstring)."""
    image = _tissue(rng)
    mask = np.zeros((SIZE, SIZE), np.uint8)
    present = bool(rng.random() < 0.5)
    grade = -1
    if present:
        radius = rng.uniform(2.5, 9.0)
        centre = rng.uniform(radius * 0.6 + 2, SIZE - radius * 0.6 - 2, size=2)
        stretch, angle = rng.uniform(0.75, 1.3), rng.uniform(0, np.pi)
        wobble, lobes, phase = rng.uniform(0.0, 0.25), int(rng.integers(3, 7)), rng.uniform(0, 2 * np.pi)
        dy, dx = _YY - centre[0], _XX - centre[1]
        u = dy * np.cos(angle) + dx * np.sin(angle)
        v = -dy * np.sin(angle) + dx * np.cos(angle)
        distance = np.sqrt((u * stretch) ** 2 + (v / stretch) ** 2)
        boundary = radius * (1 + wobble * np.sin(lobes * np.arctan2(v, u) + phase))
        inside = 1.0 / (1.0 + np.exp((distance - boundary) / 0.6))  # a soft edge
        image = image + rng.uniform(0.12, 0.45) * inside
        mask = (inside > 0.5).astype(np.uint8)
        grade = int(np.searchsorted(GRADE_RADII, radius))
    image = image + rng.normal(0, 0.04, image.shape)
    pixels = np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)
    return {"image": pixels[:, :, None], "lesion": int(present), "grade": grade, "mask": mask}


def generate(num_examples: int, seed: int = 0, split: str = "train"):
    """Yields ``(index, example)``: ``image`` uint8 [32, 32, 1], ``lesion``, ``grade`` (-1 without
    a lesion), ``mask`` uint8 [32, 32], ``id``."""
    for i in range(num_examples):
        example = scan(np.random.default_rng([seed, SPLITS[split], i]))
        example["id"] = i
        yield i, example
