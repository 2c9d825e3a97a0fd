"""The latest checkpoints: at every epoch end, every ``every_steps`` steps and when the run stops.

Saves ``run.state`` and ``run.meta`` through :class:`~mtl_jax.train.checkpoint.Checkpointer`
(orbax; asynchronous when the checkpointer is: the arrays are copied before ``save`` returns
and written while training goes on, and a step appears only once complete). Put this hook after
every hook that changes ``run.meta`` or logs, so a checkpoint holds all of it.
"""
from __future__ import annotations

from mtl_jax.train.hooks.base import Hook, every


class Checkpointing(Hook):
    def __init__(self, checkpointer, every_steps: int = 0, saveable=lambda meta: meta):
        self.checkpointer, self.every_steps, self.saveable = checkpointer, every_steps, saveable

    def due(self, run) -> bool:
        return every(run.step, self.every_steps)

    def at_sync(self, run, row, end_of_epoch) -> None:
        if end_of_epoch or self.due(run) or run.stopping:
            self.checkpointer.save(run.state, self.saveable(run.meta))

    def end(self, run, error) -> None:
        self.checkpointer.wait()
