"""What a non-finite step does to the run: stop with an error that names it, or skip it.

The step never applies a non-finite update (:mod:`mtl_jax.train.step`): it leaves the state as
it was and flags ``outputs["finite"] = False``. Under ``"raise"`` this hook stops the run with
an error naming the tasks whose loss is not finite (or the gradient, or the update) and the
step; under ``"skip"`` it counts the step (``meta["skipped_steps"]``, and per epoch
``history["skipped_steps"]``). Since outputs are read at every sync point before anything is
saved, no checkpoint ever holds a state past an unhandled non-finite step.
"""
from __future__ import annotations

import math
from typing import Literal

from mtl_jax.train.hooks.base import Hook

NonFinitePolicy = Literal["raise", "skip"]


class NonFinite(Hook):
    def __init__(self, policy: NonFinitePolicy = "raise", checkpointer=None):
        if policy not in ("raise", "skip"):
            raise ValueError(f"nonfinite must be 'raise' or 'skip', got {policy!r}")
        self.policy, self.checkpointer = policy, checkpointer

    def begin(self, run) -> None:
        run.meta.setdefault("skipped_steps", 0)

    def on_outputs(self, run, step, outputs) -> None:
        if bool(outputs["finite"]):
            return
        if self.policy == "raise":
            raise FloatingPointError(self._message(run, step, outputs))
        run.meta["skipped_steps"] += 1

    def report(self, run, row, end_of_epoch) -> None:
        if end_of_epoch:
            row["skipped_steps"] = run.meta["skipped_steps"]

    def _message(self, run, step, outputs) -> str:
        what = not_finite(run.tasks, outputs)
        saved = self.checkpointer.steps() if self.checkpointer is not None else []
        last = f"; the last checkpoint is step {saved[-1]}" if saved else ""
        return (f"non-finite {what} at step {step} (epoch {run.epoch + 1}); training stopped and this state "
                f"was not checkpointed{last}. Lower the learning rate, clip gradients, check the targets, or "
                "pass nonfinite='skip' to drop such steps")


def not_finite(tasks, outputs) -> str:
    """What of a step (its host outputs) was not finite: ``"loss for task(s) [...]"``, the gradient or the update."""
    bad = [t.name for t, total in zip(tasks, outputs["loss_sum"]) if not math.isfinite(float(total))]
    norm = float(outputs["grad_norm"])
    return (f"loss for task(s) {bad}" if bad
            else f"gradient (norm {norm}; losses finite)" if not math.isfinite(norm)
            else f"update (losses and gradient norm {norm:.3g} finite; the new parameters or optimizer "
                 "state overflowed)")
