"""Validation during training: at every epoch end and every ``every_steps`` steps.

``evaluate(params) -> {"<task>/<metric>": value}`` (exact metrics over the whole validation
data, e.g. :func:`mtl_jax.train.loop.evaluate` bound to the data) is called at those sync
points and its values join the row as ``validation/<task>/<metric>``: logged, appended to
the history at epoch ends, and read by :class:`~mtl_jax.train.hooks.best.BestCheckpoint`.
"""
from __future__ import annotations

from typing import Callable, Mapping

from mtl_jax.train.hooks.base import Hook, every


class Evaluation(Hook):
    def __init__(self, evaluate: Callable[[object], Mapping[str, float]], every_steps: int = 0,
                 prefix: str = "validation"):
        self.evaluate, self.every_steps, self.prefix = evaluate, every_steps, prefix

    def due(self, run) -> bool:
        return every(run.step, self.every_steps)

    def report(self, run, row, end_of_epoch) -> None:
        if end_of_epoch or self.due(run):
            row.update({f"{self.prefix}/{k}": v for k, v in self.evaluate(run.state.params).items()})
