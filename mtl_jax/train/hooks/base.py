"""The hook interface of :func:`mtl_jax.train.train_loop.train_loop`.

A hook is an object with any of these methods (subclass :class:`Hook` for no-op defaults).
The loop calls every hook, in the order given, at each event:

==========================================  ================================================
``begin(run)``                              once, before the first step (after a restore)
``before_step(run, batch)``                 before each step, with the batch it will train on
``after_step(run)``                         after each step is dispatched; must not wait for
                                            the device (do not read ``run.state`` values)
``on_outputs(run, step, outputs)``          each step's outputs as numpy, in step order, a
                                            step or more late (the host does not stall)
``due(run) -> bool``                        after each step: True asks for a sync point now
``report(run, row, end_of_epoch)``          at a sync point: add values to ``row`` (they are
                                            logged, and appended to the history at an epoch end)
``at_sync(run, row, end_of_epoch)``         at a sync point, once ``row`` is complete and the
                                            history appended: act on it (save, stop, print)
``end(run, error)``                         once, when the run ends; ``error`` is the exception
                                            that ended it, or None
==========================================  ================================================

At a sync point every step's outputs up to ``run.step`` have been delivered and ``run.state``
is that step's state. A hook that must survive an interruption keeps its bookkeeping in
``run.meta`` under its own key (JSON values): checkpoints save ``run.meta`` with the state and a
resumed run starts from it. A hook requests the end of training with ``run.request_stop()``.

Example, a hook that logs the mean of task 0's loss over the last 100 steps::

    class RunningLoss(Hook):
        def __init__(self):
            self.values = collections.deque(maxlen=100)

        def on_outputs(self, run, step, outputs):
            self.values.append(outputs["loss_sum"][0] / max(outputs["loss_count"][0], 1))

        def report(self, run, row, end_of_epoch):
            row["train/running_loss"] = float(np.mean(self.values))
"""
from __future__ import annotations

from typing import Any


EVENTS = ("begin", "before_step", "after_step", "on_outputs", "due", "report", "at_sync", "end")


class Hook:
    """No-op defaults for every event of the loop; override the ones a hook needs."""

    def begin(self, run) -> None:
        pass

    def before_step(self, run, batch) -> None:
        pass

    def after_step(self, run) -> None:
        pass

    def on_outputs(self, run, step: int, outputs: dict[str, Any]) -> None:
        pass

    def due(self, run) -> bool:
        return False

    def report(self, run, row: dict[str, Any], end_of_epoch: bool) -> None:
        pass

    def at_sync(self, run, row: dict[str, Any], end_of_epoch: bool) -> None:
        pass

    def end(self, run, error: BaseException | None) -> None:
        pass


def every(step: int, interval: int) -> bool:
    """Whether ``step`` is one of every ``interval`` steps (never when ``interval`` is 0)."""
    return bool(interval) and step % interval == 0
