"""The best checkpoint by a validation metric, and early stopping.

Watches ``monitor.metric`` (e.g. ``validation/price/rmse``, direction from the metric) in every
row that holds it (:mod:`mtl_jax.train.monitor`). When it improves by more than ``min_delta``
the state is saved as the best checkpoint (when a checkpointer is given); after ``patience``
evaluations in a row without improvement the run is stopped. The bookkeeping lives in
``run.meta["monitor"]``, so a resumed run stops exactly where an uninterrupted one would.
"""
from __future__ import annotations

from mtl_jax.train.hooks.base import Hook
from mtl_jax.train.monitor import Monitor


class BestCheckpoint(Hook):
    def __init__(self, monitor: Monitor, checkpointer=None, saveable=lambda meta: meta):
        self.monitor, self.checkpointer, self.saveable = monitor, checkpointer, saveable

    def begin(self, run) -> None:
        run.meta.setdefault("monitor", Monitor.init())

    def at_sync(self, run, row, end_of_epoch) -> None:
        if self.monitor.metric not in row:
            return
        run.meta["monitor"], improved = self.monitor.update(run.meta["monitor"], row[self.monitor.metric], run.step)
        if improved and self.checkpointer is not None:
            self.checkpointer.save_best(run.state, self.saveable(run.meta))
        if self.monitor.should_stop(run.meta["monitor"]):
            run.request_stop()
