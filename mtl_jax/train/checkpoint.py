"""Checkpoints with orbax: the k latest, the best by a validation metric, safe resumption.

A workdir holds two orbax ``CheckpointManager`` folders, kept apart on purpose (a single
manager with ``best_fn`` would delete the latest step and make resumption impossible):

* ``checkpoints/<step>``: the ``keep`` latest, written every N steps and at epoch ends;
* ``best/<step>``: one checkpoint, the best so far by the chosen validation metric.

Each checkpoint has three items: ``state`` (the whole :class:`~mtl_jax.train.state.TrainState`:
params, optimizer state, weighting state, step, RNG key), ``meta`` (JSON: epoch, position in
the epoch, history, early-stopping and best-metric bookkeeping, skipped-step count) and, when
saved mid-epoch, ``epoch_outputs`` (the statistics of the epoch's steps so far, so that the
epoch's metrics are exact after a resume). The data position is ``(epoch, step_in_epoch)``:
batch order is a pure function of the seed and the epoch (:mod:`mtl_jax.data.batching`).

orbax writes a step into a temporary folder and renames it when complete, so a process
killed during a save leaves only a temporary folder, which is ignored. A checkpoint that
is present but unreadable (a corrupted file) is moved to ``corrupt/`` with a warning and
the previous one is used.
"""
from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
import orbax.checkpoint as ocp

LATEST_DIR = "checkpoints"
BEST_DIR = "best"
CORRUPT_DIR = "corrupt"


class Restored(NamedTuple):
    step: int
    state: Any
    meta: dict
    epoch_outputs: list


def saved_steps(workdir: str | Path) -> list[int]:
    """Steps of the complete latest-checkpoints in ``workdir``, read without opening orbax."""
    folder = Path(workdir) / LATEST_DIR
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.is_dir() else []


def abstract_of(tree):
    """Shapes, dtypes and shardings of ``tree``: the target orbax restores against."""
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def _manager(directory: Path, keep: int) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=False)
    return ocp.CheckpointManager(directory, options=options)


def stack_outputs(outputs: list) -> Any:
    return jax.tree.map(lambda *leaves: np.stack(leaves), *outputs)


def unstack_outputs(stacked, count: int) -> list:
    return [jax.tree.map(lambda leaf: leaf[i], stacked) for i in range(count)]


class Checkpointer:
    """The latest-k and best checkpoints of one workdir."""

    def __init__(self, workdir: str | Path, keep: int = 3):
        if keep < 1:
            raise ValueError(f"keep_checkpoints must be >= 1, got {keep}")
        self.workdir = Path(workdir).absolute()  # orbax refuses relative checkpoint paths
        self.latest = _manager(self.workdir / LATEST_DIR, keep)
        self.best = _manager(self.workdir / BEST_DIR, 1)

    def steps(self) -> list[int]:
        return sorted(self.latest.all_steps())

    def save(self, state, meta: dict, epoch_outputs: list) -> None:
        """Saves the latest checkpoint at ``state.step`` (host outputs of the epoch so far)."""
        step = int(state.step)
        if step in self.latest.all_steps():
            return  # written before an interruption; identical by determinism
        items = {"state": ocp.args.StandardSave(state), "meta": ocp.args.JsonSave(meta)}
        if epoch_outputs:
            items["epoch_outputs"] = ocp.args.StandardSave(stack_outputs(epoch_outputs))
        self.latest.save(step, args=ocp.args.Composite(**items))
        self.latest.wait_until_finished()

    def save_best(self, state, meta: dict) -> None:
        step = int(state.step)
        if step in self.best.all_steps():
            return
        self.best.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                     meta=ocp.args.JsonSave(meta)))
        self.best.wait_until_finished()

    def restore_latest(self, abstract_state, abstract_output) -> Restored | None:
        """The newest readable checkpoint, or None; unreadable ones are set aside."""
        for step in reversed(self.steps()):
            try:
                return self._restore(self.latest, step, abstract_state, abstract_output)
            except Exception as error:  # noqa: BLE001 - any read failure means a damaged checkpoint
                self._set_aside(step, error)
        return None

    def restore_best(self, abstract_state) -> Restored | None:
        steps = self.best.all_steps()
        return self._restore(self.best, max(steps), abstract_state, None) if steps else None

    def restore_step(self, step: int, abstract_state) -> Restored:
        return self._restore(self.latest, step, abstract_state, None)

    @staticmethod
    def _restore(manager, step, abstract_state, abstract_output) -> Restored:
        meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
        items = {"state": ocp.args.StandardRestore(abstract_state)}
        count = int(meta.get("step_in_epoch", 0))
        if abstract_output is not None and count:
            target = jax.tree.map(lambda a: jax.ShapeDtypeStruct((count, *a.shape), a.dtype), abstract_output)
            items["epoch_outputs"] = ocp.args.StandardRestore(target)
        restored = manager.restore(step, args=ocp.args.Composite(**items))
        outputs = unstack_outputs(restored["epoch_outputs"], count) if "epoch_outputs" in items else []
        outputs = jax.tree.map(np.asarray, outputs)
        return Restored(step, restored.state, meta, outputs)

    def _set_aside(self, step: int, error: Exception) -> None:
        target = self.workdir / CORRUPT_DIR / str(step)
        warnings.warn(f"checkpoint {self.workdir / LATEST_DIR / str(step)} is unreadable "
                      f"({type(error).__name__}: {str(error)[:200]}); moved to {target}, using the previous one",
                      RuntimeWarning, stacklevel=3)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            shutil.rmtree(target)
        shutil.move(str(self.workdir / LATEST_DIR / str(step)), str(target))
        self.latest.reload()

    def close(self) -> None:
        self.latest.close()
        self.best.close()
