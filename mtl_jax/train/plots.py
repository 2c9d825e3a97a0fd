"""Figures written to a workdir: training progress per task, task weights over time, task-gradient
cosine heat maps over time, and the inter-task affinity heat map.

Files are written to a temporary name and renamed, so an interrupted call never leaves a
half-written plot behind.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from mtl_jax.tasks import Task  # noqa: E402
from mtl_jax.files import atomic_write  # noqa: E402


def plot_history(history: dict, tasks: Sequence[Task], path: str | Path, max_metrics: int = 2) -> Path:
    """Writes a PNG with one row per task: its loss and its first ``max_metrics`` metrics.

    The file is written to a temporary name and renamed, so an interrupted call never
    leaves a half-written plot behind.
    """
    path = Path(path)
    columns = 1 + max(min(len(t.metrics), max_metrics) for t in tasks)
    fig, axes = plt.subplots(len(tasks), columns, figsize=(3.6 * columns, 2.6 * len(tasks)), squeeze=False)
    epochs = history["epoch"]
    for row, task in zip(axes, tasks):
        names = ["loss", *task.metrics[:max_metrics]]
        for ax, name in zip(row, names):
            for split, style in (("train", "-"), ("validation", "--")):
                values = history.get(f"{split}/{task.name}/{name}")
                if values:
                    ax.plot(epochs, values, style, marker="o", markersize=3, label=split)
            ax.set_title(f"{task.name}: {name}", fontsize=10)
            ax.set_xlabel("epoch")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        for ax in row[len(names):]:
            ax.axis("off")
    fig.tight_layout()
    _save(fig, path)
    return path


def plot_task_weights(rows: Sequence[dict], tasks: Sequence[Task], path: str | Path) -> Path:
    """Writes a PNG of every task's loss weight against the training step.

    ``rows`` are the logged rows of :mod:`mtl_jax.train.writers` (``train/<task>/weight``).
    """
    path = Path(path)
    fig, ax = plt.subplots(figsize=(6.0, 3.4))
    for task in tasks:
        key = f"train/{task.name}/weight"
        points = [(row["step"], row[key]) for row in rows if key in row]
        if points:
            steps, values = zip(*points)
            ax.plot(steps, values, label=task.name)
    ax.set_xlabel("step")
    ax.set_ylabel("loss weight")
    ax.set_title("task weights")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)
    return path


def _heat_map(ax, matrix, names, title, vmin=-1.0, vmax=1.0, annotate=True):
    image = ax.imshow(matrix, cmap="RdBu", vmin=vmin, vmax=vmax)
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_title(title, fontsize=9)
    if annotate and len(names) <= 8:
        for (i, j), value in np.ndenumerate(matrix):
            ax.text(j, i, f"{value:+.2f}", ha="center", va="center", fontsize=6)
    return image


def plot_gradient_conflict(history: dict, tasks: Sequence[Task], path: str | Path, max_maps: int = 6) -> Path:
    """Heat maps of the mean task-gradient cosine matrix at up to ``max_maps`` epochs spread over
    training, and the mean number of conflicting pairs per step against the epoch."""
    path = Path(path)
    matrices, epochs = history["train/gradient_cosines"], history["epoch"]
    shown = sorted({round(i * (len(epochs) - 1) / max(max_maps - 1, 1)) for i in range(min(max_maps, len(epochs)))})
    names = [t.name for t in tasks]
    columns = min(3, len(shown))
    rows = -(-len(shown) // columns)
    size = 1.2 + 0.35 * len(names)
    fig = plt.figure(figsize=(columns * size + 1.0, rows * size + 2.4), layout="constrained")
    grid = fig.add_gridspec(rows + 1, columns, height_ratios=[size] * rows + [2.0])
    image, maps = None, []
    for k, index in enumerate(shown):
        ax = fig.add_subplot(grid[k // columns, k % columns])
        image = _heat_map(ax, np.asarray(matrices[index]), names, f"cosines, epoch {epochs[index]}")
        if k % columns:
            ax.set_yticklabels([])
        maps.append(ax)
    if image is not None:
        fig.colorbar(image, ax=maps, shrink=0.6)
    pairs = history.get("train/conflicting_pairs", [])
    ax = fig.add_subplot(grid[rows, :])
    ax.plot(epochs[:len(pairs)], pairs, marker="o", markersize=3)
    ax.set_xlabel("epoch")
    ax.set_title(f"conflicting pairs per step (of {len(tasks) * (len(tasks) - 1) // 2})", fontsize=9)
    ax.grid(alpha=0.3)
    _save(fig, path)
    return path


def plot_affinity(matrix, tasks: Sequence[Task], path: str | Path) -> Path:
    """A heat map of the inter-task affinity (row: the task stepped on; column: the task whose
    loss changes; blue helps, red hurts)."""
    path = Path(path)
    matrix = np.asarray(matrix, np.float64)
    off_diagonal = matrix[~np.eye(len(matrix), dtype=bool)]
    bound = float(np.max(np.abs(off_diagonal))) if off_diagonal.size else float(np.max(np.abs(matrix)))
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * len(tasks) + 2.0, 0.55 * len(tasks) + 2.2))
    image = _heat_map(ax, matrix, [t.name for t in tasks], "inter-task affinity (step on row, effect on column)",
                      vmin=-max(bound, 1e-12), vmax=max(bound, 1e-12))
    fig.colorbar(image, ax=ax, shrink=0.8)
    fig.tight_layout()
    _save(fig, path)
    return path


def _save(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_write(path, "wb") as file:
            fig.savefig(file, dpi=110, format="png")
    finally:
        plt.close(fig)
