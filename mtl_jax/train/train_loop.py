"""The training loop: steps, sync points and hooks, nothing else.

``train_loop(train_step, run, epoch_batches, hooks)`` runs ``train_step(state, batch) ->
(state, outputs)`` over the batches of each epoch and lets :class:`~mtl_jax.train.hooks.Hook` s
do everything else (logging, evaluation, checkpoints, early stopping, progress, plots): the
loop itself only dispatches steps, reads their outputs back and folds them into the epoch's
statistics (:mod:`mtl_jax.train.epoch_stats`).

The host never waits for the step it has just dispatched, except at a *sync point*:

* a step's outputs are read a step late: after step ``s`` is dispatched, the outputs of the
  steps before it (every ``fetch_every`` steps) are copied to the host, which blocks only on
  steps the device has already finished or is about to, and handed to every hook's
  ``on_outputs`` in step order;
* a sync point comes after the last step of an epoch and after any step at which a hook is
  ``due`` (evaluation, checkpoint every N steps): all outputs up to it are delivered first,
  then each hook's ``report`` adds values to the step's row (the epoch's train metrics are
  already in it at an epoch end), the epoch's history is appended, and each hook's
  ``at_sync`` acts on the complete row (best checkpoint, early stopping, logs, checkpoint).

Everything a resumed run needs is in ``run.meta`` (JSON: the position ``(epoch,
step_in_epoch)``, the history, the epoch's accumulator and each hook's own entries), which a
checkpoint hook saves with the state; batch order is a pure function of ``(seed, epoch)``, so
``epoch_batches(epoch, start)`` resumes mid-epoch exactly.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import jax

from mtl_jax.tasks import Task
from mtl_jax.train import epoch_stats


def new_meta() -> dict:
    """The bookkeeping of a run that has not trained yet."""
    return {"epoch": 0, "step_in_epoch": 0, "history": {"epoch": []}, "stopped_early": False,
            "epoch_stats": epoch_stats.init()}


@dataclasses.dataclass
class Run:
    """What hooks see and may change.

    Attributes:
      tasks: the tasks, in the order of the step's per-task outputs.
      state: the current train state (its buffers are donated to the next step: read it in a
        hook call, do not keep it).
      meta: JSON-able bookkeeping saved with every checkpoint: ``epoch`` (epochs finished),
        ``step_in_epoch``, ``history`` (``{key: [per epoch]}``), ``stopped_early``,
        ``epoch_stats`` and whatever hooks keep there under their own key.
      epochs: how many epochs the run trains.
      steps_per_epoch: None when the batches' count is not known in advance (an iterable).
      workdir: where the run writes, or None.
      step: the number of steps dispatched (``int(state.step)`` without a device sync).
    """
    tasks: tuple[Task, ...]
    state: Any
    meta: dict
    epochs: int
    steps_per_epoch: int | None = None
    workdir: Path | None = None
    step: int = 0

    @property
    def epoch(self) -> int:
        """The epoch in progress (0-based), i.e. the number of finished epochs."""
        return self.meta["epoch"]

    @property
    def history(self) -> dict[str, list]:
        return self.meta["history"]

    @property
    def stopping(self) -> bool:
        return bool(self.meta["stopped_early"])

    def request_stop(self) -> None:
        """Stops the run after this sync point (the checkpoint hook still saves it)."""
        self.meta["stopped_early"] = True


def _with_last(items: Iterable) -> Iterator[tuple[Any, bool]]:
    """``(item, is_last)``: one item of lookahead, so an epoch's end is known at its last batch
    even when the batches' count is not."""
    iterator = iter(items)
    try:
        current = next(iterator)
    except StopIteration:
        return
    for upcoming in iterator:
        yield current, False
        current = upcoming
    yield current, True


def train_loop(train_step: Callable, run: Run, epoch_batches: Callable[[int, int], Iterable[dict]],
               hooks: Sequence, *, fetch_every: int = 8) -> Run:
    """Trains ``run.state`` until ``run.epochs`` epochs are done or a hook stops the run.

    Args:
      train_step: ``(state, batch) -> (state, outputs)`` (e.g.
        :func:`mtl_jax.train.step.make_train_step`); ``outputs`` must hold what
        :func:`mtl_jax.train.epoch_stats.add` folds (``loss_sum``, ``loss_count``, ``stats``,
        ``finite``...).
      run: the state and bookkeeping to continue from (:func:`new_meta` for a new run).
      epoch_batches: ``(epoch, start_step) -> batches`` of that epoch from ``start_step`` on.
      hooks: called in this order at every event (:class:`mtl_jax.train.hooks.Hook`).
      fetch_every: read outputs back at least every this many steps (always a step late).

    Returns ``run``, with the final state. Every hook's ``end`` is called, also when a step or
    a hook raises (with the error).
    """
    pending: list[tuple[int, Any]] = []  # (step, device outputs) not yet read

    def deliver(include_newest: bool) -> None:
        chunk = pending[:] if include_newest else pending[:-1]
        if not chunk:
            return
        fetched = jax.device_get([out for _, out in chunk])
        del pending[:len(chunk)]
        for (step, _), out in zip(chunk, fetched):
            run.meta["epoch_stats"] = epoch_stats.add(run.meta["epoch_stats"], run.tasks, out)
            for hook in hooks:
                hook.on_outputs(run, step, out)

    def sync(end_of_epoch: bool) -> None:
        deliver(include_newest=True)
        row: dict[str, Any] = {}
        if end_of_epoch:
            row["epoch"] = run.epoch + 1
            row.update({f"train/{k}": v for k, v in epoch_stats.summary(run.tasks, run.meta["epoch_stats"]).items()})
        for hook in hooks:
            hook.report(run, row, end_of_epoch)
        if end_of_epoch:
            for key, value in row.items():
                run.history.setdefault(key, []).append(value)
            run.meta.update(epoch=run.epoch + 1, step_in_epoch=0, epoch_stats=epoch_stats.init())
        for hook in hooks:
            hook.at_sync(run, row, end_of_epoch)

    error = None
    try:
        for hook in hooks:
            hook.begin(run)
        while run.epoch < run.epochs and not run.stopping:
            epoch, trained = run.epoch, False
            for batch, last in _with_last(epoch_batches(epoch, run.meta["step_in_epoch"])):
                for hook in hooks:
                    hook.before_step(run, batch)
                run.state, out = train_step(run.state, batch)
                run.step += 1
                run.meta["step_in_epoch"] += 1
                pending.append((run.step, out))
                trained = True
                for hook in hooks:
                    hook.after_step(run)
                if last or any([hook.due(run) for hook in hooks]):
                    sync(end_of_epoch=last)
                    if run.stopping:
                        break
                elif len(pending) > fetch_every:
                    deliver(include_newest=False)
            if not trained and run.epoch == epoch:
                raise ValueError(f"epoch {epoch + 1} yielded no batches (from step {run.meta['step_in_epoch']} "
                                 "of the epoch): an iterable of batches is read again every epoch, so pass one "
                                 "that can be (a list, or a function of the epoch), not a used-up iterator")
    except BaseException as raised:
        error = raised
        raise
    finally:
        for hook in hooks:
            hook.end(run, error)
    return run
