"""Logging to ``metrics.jsonl`` and TensorBoard (:class:`~mtl_jax.train.writers.MetricWriter`).

Every ``log_every_steps`` steps a row of the step's own values: per task the step loss
(``train/<task>/step_loss``) and weight, the gradient norm, whether the step was skipped, and
where the step reports them the gradient cosines (:mod:`mtl_jax.diagnostics.conflict`), the
penalty, the solver residual and the learning rate. These come from the outputs the loop reads
a step late, so logging never stalls the device. At every sync point the row the hooks built
(epoch train metrics, validation metrics, ...) is written and the files are flushed to disk,
before any checkpoint hook after this one saves: after an interruption the log holds every
row up to the checkpoint it resumes from.
"""
from __future__ import annotations

from typing import Callable

from mtl_jax.diagnostics import conflict
from mtl_jax.train.hooks.base import Hook, every


def step_row(tasks, outputs, step: int, learning_rate_fn: Callable[[int], float] | None) -> dict:
    """The logged values of one step from its host outputs."""
    row = {}
    for i, task in enumerate(tasks):
        count = float(outputs["loss_count"][i])
        row[f"train/{task.name}/step_loss"] = float(outputs["loss_sum"][i]) / count if count else float("nan")
        row[f"train/{task.name}/weight"] = float(outputs["weights"][i])
    row["train/grad_norm"] = float(outputs["grad_norm"])
    row["train/skipped"] = float(not bool(outputs["finite"]))
    if "gramian" in outputs:
        row.update(conflict.step_row(tasks, outputs["gramian"]))
    if "penalty" in outputs:
        row["train/penalty"] = float(outputs["penalty"])
    if "solver_residual" in outputs:
        row["train/solver_residual"] = float(outputs["solver_residual"])
    if "loss_scale" in outputs:  # float16 with a dynamic loss scale
        row["train/loss_scale"] = float(outputs["loss_scale"])
        row["train/overflow"] = float(bool(outputs["overflow"]))
    if learning_rate_fn is not None:
        row["train/learning_rate"] = float(learning_rate_fn(step - 1))
    return row


class MetricLog(Hook):
    def __init__(self, writer, log_every_steps: int = 10, learning_rate_fn: Callable[[int], float] | None = None):
        self.writer, self.log_every_steps, self.learning_rate_fn = writer, log_every_steps, learning_rate_fn

    def on_outputs(self, run, step, outputs) -> None:
        if every(step, self.log_every_steps):
            self.writer.write(step, step_row(run.tasks, outputs, step, self.learning_rate_fn))

    def at_sync(self, run, row, end_of_epoch) -> None:
        scalars = {k: v for k, v in row.items() if isinstance(v, (int, float))}
        if scalars:
            self.writer.write(run.step, scalars)
        self.writer.flush()

    def end(self, run, error) -> None:
        self.writer.close()
