"""Writes a small dataset of your own kind as .npz files, for ``experiments/configs/arrays.py``.

Tabular inputs ``x`` (8 features) with two tasks: ``quality`` (regression) and ``grade``
(3 classes), 1,000 / 200 / 200 examples, under ``data/arrays_example/``. Replace these files by
yours (same keys, or change the config's) to train on your own data:

    python experiments/make_arrays_example.py
    mtl-jax train --config experiments/configs/arrays.py --workdir runs/arrays
"""
from pathlib import Path

import numpy as np


def make(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    x = rng.normal(size=(n, 8)).astype(np.float32)
    quality = (x[:, 0] - 0.5 * x[:, 1] + 0.3 * x[:, 2] * x[:, 3] + 0.1 * rng.normal(size=n)).astype(np.float32)
    grade = np.digitize(x[:, 0] + x[:, 4], [-0.7, 0.7]).astype(np.int32)  # shares x[:, 0] with quality
    return {"x": x, "quality": quality, "grade": grade}


def main(folder: str = "data/arrays_example") -> None:
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", 1000), ("validation", 200), ("test", 200)):
        np.savez(out / f"{split}.npz", **make(n, rng))
    print(f"wrote {out}/train.npz, validation.npz, test.npz")


if __name__ == "__main__":
    main()
