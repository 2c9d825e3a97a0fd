"""What a finished run leaves in its workdir: ``history.json`` and the plots.

``training_progress.png`` (per-task train and validation curves, :func:`mtl_jax.train.plots.plot_history`),
``task_weights.png`` (each task's logged weight over the steps) and, when the step formed a
Gramian of the task gradients, ``gradient_conflict.png``. Written only when the run ends
without an error, each file atomically.
"""
from __future__ import annotations

from mtl_jax.files import write_json
from mtl_jax.train.hooks.base import Hook
from mtl_jax.train.plots import plot_gradient_conflict, plot_history, plot_task_weights
from mtl_jax.train.writers import METRICS_FILE, read_rows

HISTORY_FILE = "history.json"


class RunFiles(Hook):
    def __init__(self, plots: bool = True):
        self.plots = plots

    def end(self, run, error) -> None:
        if error is not None or run.workdir is None:
            return
        history = run.history
        write_json(run.workdir / HISTORY_FILE, history)
        if history["epoch"] and self.plots:
            plot_history(history, run.tasks, run.workdir / "training_progress.png")
            plot_task_weights(read_rows(run.workdir / METRICS_FILE), run.tasks, run.workdir / "task_weights.png")
            if history.get("train/gradient_cosines"):
                plot_gradient_conflict(history, run.tasks, run.workdir / "gradient_conflict.png")
