"""Inter-task affinity during training (:mod:`mtl_jax.diagnostics.affinity`).

Every ``every_steps`` steps, before the step, the affinity of the batch about to be trained on
is measured on device (a lookahead step per task); the matrices are read back with the step's
outputs (never stalling the device), logged as ``affinity/<a>-><b>`` when a writer is given,
and averaged: per epoch into ``history["affinity"]`` and over the run into ``affinity.json`` and
``affinity.png`` in the workdir. The running sums live in ``run.meta["affinity"]``.
"""
from __future__ import annotations

from typing import Callable

import jax
import numpy as np

from mtl_jax.diagnostics.affinity import Affinities, affinity_table, strongest_partners
from mtl_jax.files import write_json
from mtl_jax.train.hooks.base import Hook, every
from mtl_jax.train.plots import plot_affinity


class Affinity(Hook):
    def __init__(self, affinity_step: Callable, every_steps: int, learning_rate: Callable[[int], float],
                 writer=None):
        self.affinity_step, self.every_steps = affinity_step, every_steps
        self.learning_rate, self.writer = learning_rate, writer
        self.pending: list = []  # (step, device [T, T] matrix)

    def begin(self, run) -> None:
        run.meta.setdefault("affinity", Affinities.init(len(run.tasks)))

    def before_step(self, run, batch) -> None:
        if every(run.step + 1, self.every_steps):
            rate = self.learning_rate(run.step)
            self.pending.append((run.step + 1, self.affinity_step(run.state.params, batch, rate)))

    def on_outputs(self, run, step, outputs) -> None:
        ready = [(s, m) for s, m in self.pending if s <= step]
        if not ready:
            return
        self.pending = self.pending[len(ready):]
        for (s, _), matrix in zip(ready, jax.device_get([m for _, m in ready])):
            run.meta["affinity"] = Affinities.add(run.meta["affinity"], matrix)
            if self.writer is not None:
                self.writer.write(s, {f"affinity/{a.name}->{b.name}": float(matrix[i, j])
                                      for i, a in enumerate(run.tasks) for j, b in enumerate(run.tasks)})

    def report(self, run, row, end_of_epoch) -> None:
        if end_of_epoch:
            row["affinity"] = Affinities.epoch_mean(run.meta["affinity"])
            run.meta["affinity"] = Affinities.new_epoch(run.meta["affinity"])

    def end(self, run, error) -> None:
        if error is None and run.workdir is not None and run.meta["affinity"]["count"]:
            write_affinity(run.workdir, run.tasks, Affinities.mean(run.meta["affinity"]),
                           run.meta["affinity"]["count"])


def write_affinity(workdir, tasks, matrix, count: int) -> None:
    """``affinity.json`` (matrix, measurements, strongest partners, markdown table) and ``affinity.png``."""
    write_json(workdir / "affinity.json", {
        "tasks": [t.name for t in tasks], "affinity": np.asarray(matrix).tolist(), "measurements": count,
        "rows": "the task stepped on", "columns": "the task whose loss changes",
        "partners": strongest_partners(matrix, tasks), "table": affinity_table(matrix, tasks)})
    plot_affinity(matrix, tasks, workdir / "affinity.png")
