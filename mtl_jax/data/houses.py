"""Procedural 64x64x3 pictures of houses, and the labels of six related tasks.

Every house has a width set by its ``size`` in [0, 1], 1-3 ``storeys``, 1-3 windows per
storey, one of three ``kind``s with visibly different roofs (0 cottage: a pitched
triangle; 1 modern: a thin flat slab; 2 dome: an elliptical dome) and one of four
``roof_colour``s (red, slate grey, brown, teal), on a jittered sky and lawn with pixel
noise. Tasks:

* ``price`` (regression, in units of $100k):
  ``1 + 2 size + 0.5 (storeys - 1) + 0.1 windows + [0, 0.6, 1.2][kind] + N(0, 0.1^2)``;
* ``kind`` (3 classes), ``storeys`` (3 classes: 1, 2 or 3 storeys as labels 0-2),
  ``roof_colour`` (4 classes);
* ``windows`` (regression: the number of windows, 1-9);
* ``parts`` (segmentation, 4 classes per pixel: background, wall, roof, window).

Example ``i`` of a split is drawn from ``default_rng([seed, split, i])`` alone, so data
are identical whatever the order or number of examples generated.
"""
from __future__ import annotations

import numpy as np

SIZE = 64
KINDS = ("cottage", "modern", "dome")
ROOF_COLOURS = ("red", "slate", "brown", "teal")
PARTS = ("background", "wall", "roof", "window")
SPLITS = {"train": 0, "validation": 1, "test": 2}

_ROOF_RGB = np.array([[0.72, 0.16, 0.10], [0.30, 0.31, 0.35], [0.48, 0.31, 0.14], [0.12, 0.48, 0.50]], np.float32)
_KIND_PREMIUM = (0.0, 0.6, 1.2)
_STOREY_HEIGHT = 9
_YY, _XX = np.mgrid[0:SIZE, 0:SIZE]


def house_price(size, storeys, windows, kind, noise):
    """The price rule (in $100k) of the module docstring."""
    return 1.0 + 2.0 * size + 0.5 * (storeys - 1) + 0.1 * windows + np.asarray(_KIND_PREMIUM)[kind] + noise


def render_house(rng: np.random.Generator) -> dict:
    """Draws one house; returns the image (uint8) and all task labels."""
    size = rng.uniform()
    storeys = int(rng.integers(1, 4))
    per_storey = int(rng.integers(1, 4))
    kind = int(rng.integers(0, 3))
    roof = int(rng.integers(0, 4))

    image = np.empty((SIZE, SIZE, 3), np.float32)
    parts = np.zeros((SIZE, SIZE), np.uint8)
    ground = int(rng.integers(52, 59))
    sky_top = np.array([0.30, 0.50, 0.85]) + rng.uniform(-0.08, 0.08, 3)
    sky_low = np.array([0.70, 0.82, 0.95]) + rng.uniform(-0.05, 0.05, 3)
    t = (np.arange(ground) / max(ground - 1, 1))[:, None, None]
    image[:ground] = (1 - t) * sky_top + t * sky_low
    image[ground:] = np.array([0.25, 0.55, 0.20]) + rng.uniform(-0.06, 0.06, 3)

    width = int(round(20 + 24 * size))
    x0 = int(rng.integers(3, SIZE - 3 - width + 1))
    top = ground - storeys * _STOREY_HEIGHT
    centre = x0 + (width - 1) / 2
    image[top:ground, x0:x0 + width] = np.array([0.90, 0.85, 0.72]) + rng.uniform(-0.08, 0.06, 3)
    parts[top:ground, x0:x0 + width] = 1

    if kind == 0:  # pitched roof: a triangle with a 2-pixel overhang
        height = width // 3 + 2
        apex = top - height
        half = (width / 2 + 2) * (_YY - apex + 1) / height
        roof_mask = (_YY >= apex) & (_YY < top) & (np.abs(_XX - centre) <= half)
    elif kind == 1:  # flat slab
        roof_mask = (_YY >= top - 3) & (_YY < top) & (_XX >= x0 - 1) & (_XX <= x0 + width)
    else:  # elliptical dome
        rx, ry = width / 2, width / 3
        roof_mask = (_YY < top) & (((_XX - centre) / rx) ** 2 + ((_YY - top + 0.5) / ry) ** 2 <= 1.0)
    image[roof_mask] = _ROOF_RGB[roof] + rng.uniform(-0.05, 0.05, 3)
    parts[roof_mask] = 2

    glass = np.array([0.95, 0.92, 0.55]) + rng.uniform(-0.05, 0.05, 3)
    for storey in range(storeys):
        y = ground - (storey + 1) * _STOREY_HEIGHT + 3
        for k in range(per_storey):
            x = int(round(x0 + (k + 1) * width / (per_storey + 1) - 2))
            image[y:y + 4, x:x + 4] = glass
            parts[y:y + 4, x:x + 4] = 3

    image += rng.normal(0.0, 0.03, image.shape).astype(np.float32)
    windows = storeys * per_storey
    return {
        "image": (np.clip(image, 0.0, 1.0) * 255).round().astype(np.uint8),
        "price": np.float32(house_price(size, storeys, windows, kind, rng.normal(0.0, 0.1))),
        "kind": kind,
        "storeys": storeys - 1,
        "roof_colour": roof,
        "windows": np.float32(windows),
        "parts": parts,
    }


def generate(num_examples: int, seed: int = 0, split: str = "train"):
    """Yields ``(index, example)`` for examples ``0..num_examples-1`` of a split."""
    for i in range(num_examples):
        example = render_house(np.random.default_rng([seed, SPLITS[split], i]))
        example["id"] = i
        yield i, example
