"""Progress on the terminal: a tqdm bar, or one line per epoch where stderr is not a terminal.

``mode="bar"``: a bar over the run's steps with each task's latest step loss (and the count of
skipped steps); ``mode="lines"``: at each epoch end one line in the style of Keras'
``verbose=2`` (:func:`epoch_line`), for CI, ``nohup`` and cluster logs; ``mode=None``: silent.
"""
from __future__ import annotations

import sys
import time
from typing import Any, Literal, Mapping, Sequence

from tqdm.auto import tqdm

from mtl_jax.tasks import Task
from mtl_jax.train.hooks.base import Hook


def progress_mode(progress: bool | None) -> Literal["bar", "lines"] | None:
    """``progress=None``: the bar on a terminal, else lines; True: the bar; False: nothing."""
    if progress is None:
        return "bar" if sys.stderr.isatty() else "lines"
    return "bar" if progress else None


def epoch_line(tasks: Sequence[Task], epoch: int, epochs: int, seconds: float, row: Mapping[str, Any]) -> str:
    """``epoch 3/10 12.1s  price: loss 0.123 rmse 0.35 (val 0.130 0.36)  kind: ...`` (Keras'
    ``verbose=2``): per task the train loss and headline metric, and the validation ones."""
    parts = [f"epoch {epoch}/{epochs} {seconds:.1f}s"]
    for task in tasks:
        names = ("loss", *task.metrics[:1])
        train = " ".join(f"{n} {row[f'train/{task.name}/{n}']:.4g}" for n in names if f"train/{task.name}/{n}" in row)
        validation = " ".join(f"{row[f'validation/{task.name}/{n}']:.4g}" for n in names
                              if f"validation/{task.name}/{n}" in row)
        parts.append(f"{task.name}: {train}" + (f" (val {validation})" if validation else ""))
    return "  ".join(parts)


class Progress(Hook):
    def __init__(self, mode: Literal["bar", "lines"] | None):
        self.mode, self.bar, self.described, self.started = mode, None, None, time.perf_counter()

    def begin(self, run) -> None:
        self.started = time.perf_counter()
        if self.mode == "bar":
            total = run.epochs * run.steps_per_epoch if run.steps_per_epoch else None
            done = run.epoch * (run.steps_per_epoch or 0) + run.meta["step_in_epoch"]
            self.bar = tqdm(total=total, initial=min(done, total or done), unit="step", dynamic_ncols=True)

    def before_step(self, run, batch) -> None:
        if self.bar is not None and self.described != run.epoch:
            self.described = run.epoch
            self.bar.set_description(f"epoch {run.epoch + 1}/{run.epochs}", refresh=False)

    def after_step(self, run) -> None:
        if self.bar is not None:
            self.bar.update()

    def on_outputs(self, run, step, outputs) -> None:
        if self.bar is None:
            return
        counts = outputs["loss_count"]
        losses = {t.name: f"{float(total) / max(float(count), 1):.3g}"
                  for t, total, count in zip(run.tasks, outputs["loss_sum"], counts)}
        skipped = run.meta.get("skipped_steps", 0)
        self.bar.set_postfix({**losses, **({"skipped": skipped} if skipped else {})}, refresh=False)

    def at_sync(self, run, row, end_of_epoch) -> None:
        if end_of_epoch and self.mode == "lines":
            print(epoch_line(run.tasks, row["epoch"], run.epochs, time.perf_counter() - self.started, row),
                  file=sys.stderr, flush=True)
        if end_of_epoch:
            self.started = time.perf_counter()

    def end(self, run, error) -> None:
        if self.bar is not None:
            self.bar.close()
