"""Figures written to a workdir: training progress per task, and task weights over time.

Files are written to a temporary name and renamed, so an interrupted call never leaves a
half-written plot behind.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from mtl_jax.tasks import Task  # noqa: E402


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


def _save(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    tmp.replace(path)
