"""Checkpoints with orbax: the k latest, the best by a validation metric, safe resumption.

A workdir holds two orbax ``CheckpointManager`` folders, kept apart on purpose (a single
manager with ``best_fn`` would delete the latest step and make resumption impossible):

* ``checkpoints/<step>``: the ``keep`` latest, written every N steps and at epoch ends;
* ``best/<step>``: one checkpoint, the best so far by the chosen validation metric.

Each checkpoint has two items: ``state`` (the whole :class:`~mtl_jax.train.state.TrainState`:
params, optimizer state, weighting state, step, RNG key) and ``meta`` (JSON: epoch, position in
the epoch, history, early-stopping and best-metric bookkeeping, skipped-step count, and the
epoch's statistics so far as a fixed-size accumulator, :mod:`mtl_jax.train.epoch_stats`, so
that the epoch's metrics are exact after a resume and the checkpoint does not grow with the
position in the epoch). The data position is ``(epoch, step_in_epoch)``: batch order is a
pure function of the seed and the epoch (:mod:`mtl_jax.data.batching`). Checkpoints written
by older versions carry a third item, ``epoch_outputs`` (every step's outputs of the epoch so
far); it is still read, and folded into the accumulator by ``fit``.

What a restore does with each kind of checkpoint:

* complete and matching the configuration's train state: restored. An older checkpoint's
  ``epoch_outputs`` are restored as saved even when the step's outputs changed shape (e.g.
  gradient diagnostics switched on), since they only feed the current epoch's statistics;
* readable but of another shape (the model, tasks or optimizer changed):
  :class:`CheckpointMismatch` naming the arrays that differ; nothing is moved;
* unreadable (truncated or missing files, bad metadata): a writer (``read_only=False``)
  moves it to ``corrupt/`` with a warning and uses the previous one; a reader warns and
  uses the previous one, moving nothing. orbax writes a step into a temporary folder and
  renames it when complete, so a process killed during a save leaves only a temporary
  folder, which is ignored.

With ``asynchronous=True`` (what ``fit`` uses) a save returns once the state's arrays are copied
to host memory (the next step may then donate their buffers: tested bitwise against blocking
saves) and the JSON item is snapshotted; orbax writes the files in a background thread and
renames the step's folder into place when they are complete, so the guarantee above holds.
The next save, ``steps()``, ``wait()`` and ``close()`` wait for pending writes.

Folders are created at the first save, never by reading.
"""
from __future__ import annotations

import contextlib
import gc
import io
import json
import logging
import shutil
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
import orbax.checkpoint as ocp

from mtl_jax.distributed import writes_files

LATEST_DIR = "checkpoints"
BEST_DIR = "best"
CORRUPT_DIR = "corrupt"


class Restored(NamedTuple):
    step: int
    state: Any
    meta: dict
    epoch_outputs: list


class CheckpointMismatch(ValueError):
    """A readable checkpoint whose arrays do not fit the configured train state."""


class UnreadableCheckpoint(ValueError):
    """A checkpoint that is damaged (truncated or missing files, bad metadata)."""


def saved_steps(workdir: str | Path) -> list[int]:
    """Steps of the complete latest-checkpoints in ``workdir``, read without opening orbax."""
    folder = Path(workdir) / LATEST_DIR
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.is_dir() else []


def set_aside_steps(workdir: str | Path) -> list[int]:
    """Steps of checkpoints moved to ``corrupt/`` by earlier runs."""
    folder = Path(workdir) / CORRUPT_DIR
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.is_dir() else []


def abstract_of(tree):
    """Shapes, dtypes and shardings of ``tree``: the target orbax restores against."""
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def placed_here(abstract):
    """``abstract`` with every leaf that names no sharding placed on this process's first device.

    Orbax restores a leaf without a target sharding onto the devices it was saved from, which
    a run on another number of devices (or another machine) does not have; placed here, a
    checkpoint written on any mesh restores on one device, and the caller places it on its
    own mesh (``fit`` places it): checkpoints move between device counts."""
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])

    def place(leaf):
        if isinstance(leaf, jax.ShapeDtypeStruct) and leaf.sharding is None:
            return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=device)
        return leaf
    return jax.tree.map(place, abstract)


def array_shapes(tree) -> dict[str, str]:
    """``{"params/trunk/Dense_0/kernel": "float32[8, 16]", ...}`` for arrays or their metadata."""
    def name(key):
        return str(getattr(key, "key", getattr(key, "name", getattr(key, "idx", key))))
    return {"/".join(name(k) for k in path): f"{np.dtype(leaf.dtype)}{list(leaf.shape)}"
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def shape_differences(saved: dict[str, str], wanted: dict[str, str]) -> list[str]:
    """``["params/x: float32[8] -> float32[16]", ...]`` for every array that differs."""
    return [f"{k}: {saved.get(k, 'absent')} -> {wanted.get(k, 'absent')}"
            for k in sorted(set(saved) | set(wanted)) if saved.get(k) != wanted.get(k)]


def short_error(error: BaseException) -> str:
    """The first line of an error, without the TensorStore spec orbax appends."""
    text = str(error).split("See full TensorStore details")[0].strip().splitlines()
    line = text[0] if text else ""
    return f"{type(error).__name__}: {line[:200]}"


def _drop_unretrieved_read_errors(record: logging.LogRecord) -> bool:
    """asyncio logs the futures and tasks of a failed orbax/TensorStore read when they are
    collected, later (at exit at the latest): drop those, keep everything else."""
    message = record.getMessage()
    if not message.startswith(("Future exception was never retrieved", "Task exception was never retrieved")):
        return True
    details = message + ("".join(traceback.format_exception(*record.exc_info)) if record.exc_info else "")
    return not any(name in details.lower() for name in ("tensorstore", "orbax"))


@contextlib.contextmanager
def _quiet_reader():
    """Keeps what a failed orbax read prints as it is torn down off the terminal: TensorStore's
    threads complete the read's pending futures on the closed event loop ("Event loop is
    closed" tracebacks, "Exception ignored in coroutine"), shortly after the error. The caller
    reports the failure in one line."""
    stderr, unraisable = sys.stderr, sys.unraisablehook
    sys.stderr, sys.unraisablehook = io.StringIO(), (lambda _: None)
    failed = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            yield
    except BaseException:
        failed = True
        raise
    finally:
        if failed:
            asyncio_logger = logging.getLogger("asyncio")
            if _drop_unretrieved_read_errors not in asyncio_logger.filters:
                asyncio_logger.addFilter(_drop_unretrieved_read_errors)
            gc.collect()
            time.sleep(0.2)  # the threads' callbacks arrive within milliseconds of the failure
        sys.stderr, sys.unraisablehook = stderr, unraisable


def unstack_outputs(stacked, count: int) -> list:
    return [jax.tree.map(lambda leaf: leaf[i], stacked) for i in range(count)]


class Checkpointer:
    """The latest-k and best checkpoints of one workdir.

    ``read_only=True`` (evaluation, prediction) never creates, moves or deletes anything.
    """

    def __init__(self, workdir: str | Path, keep: int = 3, *, read_only: bool = False,
                 asynchronous: bool = False):
        if keep < 1:
            raise ValueError(f"keep_checkpoints must be >= 1, got {keep}")
        self.workdir = Path(workdir).absolute()  # orbax refuses relative checkpoint paths
        self.keep, self.read_only = keep, read_only
        self.asynchronous = asynchronous and not read_only
        self._managers: dict[str, ocp.CheckpointManager] = {}

    def _manager(self, folder: str) -> ocp.CheckpointManager | None:
        """The manager of ``folder``; None when it does not exist and this checkpointer only reads."""
        if folder not in self._managers:
            directory = self.workdir / folder
            if not directory.is_dir():
                if self.read_only:
                    return None
                directory.mkdir(parents=True, exist_ok=True)
            keep = None if self.read_only else self.keep if folder == LATEST_DIR else 1
            options = ocp.CheckpointManagerOptions(
                max_to_keep=keep, create=False, enable_async_checkpointing=self.asynchronous, read_only=self.read_only,
                save_interval_steps=0 if self.read_only else 1,
                # with several processes the latest and best managers may save the same step at
                # once: their barriers need their own names
                multiprocessing_options=ocp.options.MultiprocessingOptions(barrier_sync_key_prefix=folder))
            handlers = {"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler(),
                        "epoch_outputs": ocp.StandardCheckpointHandler()}
            absl_logger = logging.getLogger("absl")
            level = absl_logger.level
            absl_logger.setLevel(logging.ERROR)  # orbax warns that a read-only folder is read-only
            try:
                self._managers[folder] = ocp.CheckpointManager(directory, options=options, item_handlers=handlers)
            finally:
                absl_logger.setLevel(level)
        return self._managers[folder]

    def _steps(self, folder: str) -> list[int]:
        if not (self.workdir / folder).is_dir():
            return []
        return sorted(self._manager(folder).all_steps())

    def steps(self) -> list[int]:
        """The complete latest checkpoints' steps (after any pending asynchronous write)."""
        self.wait()
        return self._steps(LATEST_DIR)

    def best_steps(self) -> list[int]:
        return self._steps(BEST_DIR)

    def save(self, state, meta: dict) -> None:
        """Saves the latest checkpoint at ``state.step``."""
        self._save(LATEST_DIR, state, meta)

    def save_best(self, state, meta: dict) -> None:
        self._save(BEST_DIR, state, meta)

    def _save(self, folder: str, state, meta: dict) -> None:
        """Asynchronous or not, ``state``'s arrays are copied before this returns (the next step
        may donate their buffers) and ``meta`` is snapshotted; orbax renames the step's folder
        into place only once it is complete."""
        step = int(state.step)
        manager = self._manager(folder)
        if step in manager.all_steps():
            return  # written before an interruption; identical by determinism
        meta = json.loads(json.dumps(meta))  # later changes to the run's meta must not reach a pending write
        manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))
        if not self.asynchronous:
            manager.wait_until_finished()

    def wait(self) -> None:
        """Returns once every checkpoint started is on disk."""
        for manager in self._managers.values():
            manager.wait_until_finished()

    def restore_latest(self, abstract_state, abstract_output=None) -> Restored | None:
        """The newest readable checkpoint, or None when there is none.

        Unreadable ones are skipped (and set aside unless read-only); a readable one of another
        shape raises :class:`CheckpointMismatch`.
        """
        for step in reversed(self.steps()):
            try:
                return self._restore(LATEST_DIR, step, abstract_state, abstract_output)
            except UnreadableCheckpoint as error:
                self._skip(step, error)
        return None

    def restore_best(self, abstract_state) -> Restored | None:
        """The best checkpoint, None when none was saved; a damaged one raises
        :class:`UnreadableCheckpoint` (nothing is moved)."""
        steps = self.best_steps()
        return self._restore(BEST_DIR, steps[-1], abstract_state, None) if steps else None

    def restore_step(self, step: int, abstract_state) -> Restored:
        return self._restore(LATEST_DIR, step, abstract_state, None)

    def _restore(self, folder: str, step: int, abstract_state, abstract_output) -> Restored:
        manager = self._manager(folder)
        where = f"{self.workdir / folder / str(step)}"
        with _quiet_reader():
            try:
                metadata = manager.item_metadata(step)
                meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
                saved = array_shapes(metadata["state"])
            except Exception as error:  # noqa: BLE001 - whatever orbax raises, the files are unusable
                raise UnreadableCheckpoint(f"checkpoint {where} is unreadable ({short_error(error)})") from None
            differences = shape_differences(saved, array_shapes(abstract_state))
            if differences:
                raise CheckpointMismatch(
                    f"checkpoint {where} does not fit this configuration: {len(differences)} array(s) differ "
                    f"(saved -> configured), e.g. {'; '.join(differences[:4])}. Use the configuration the run "
                    "was trained with (its config.json), or start a new workdir")
            items = {"state": ocp.args.StandardRestore(placed_here(abstract_state))}
            count = int(meta.get("step_in_epoch", 0))
            if abstract_output is not None and count and "epoch_stats" not in meta:  # an older checkpoint
                saved_outputs = metadata["epoch_outputs"] if "epoch_outputs" in metadata.keys() else None
                items["epoch_outputs"] = ocp.args.StandardRestore(
                    self._outputs_target(saved_outputs, abstract_output, count))
            try:
                restored = manager.restore(step, args=ocp.args.Composite(**items))
            except Exception as error:  # noqa: BLE001
                raise UnreadableCheckpoint(f"checkpoint {where} is unreadable ({short_error(error)})") from None
        outputs = unstack_outputs(restored["epoch_outputs"], count) if "epoch_outputs" in items else []
        outputs = jax.tree.map(np.asarray, outputs)
        return Restored(step, restored.state, meta, outputs)

    @staticmethod
    def _outputs_target(saved_metadata, abstract_output, count: int):
        """The restore target of the epoch's stacked step outputs: the configured step's outputs,
        or, when the step's outputs changed (diagnostics switched on or off), the saved ones."""
        wanted = jax.tree.map(lambda a: jax.ShapeDtypeStruct((count, *a.shape), a.dtype), abstract_output)
        if saved_metadata is None:
            raise UnreadableCheckpoint("the epoch's step outputs are missing")
        if array_shapes(saved_metadata) == array_shapes(wanted):
            return placed_here(wanted)
        return placed_here(jax.tree.map(lambda m: jax.ShapeDtypeStruct(tuple(m.shape), np.dtype(m.dtype)),
                                        saved_metadata))

    def _skip(self, step: int, error: UnreadableCheckpoint) -> None:
        if self.read_only or not writes_files():
            warnings.warn(f"{error}; using the previous one", RuntimeWarning, stacklevel=3)
            return
        target = self.workdir / CORRUPT_DIR / str(step)
        warnings.warn(f"{error}; moved to {target}, using the previous one", RuntimeWarning, stacklevel=3)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            shutil.rmtree(target)
        shutil.move(str(self.workdir / LATEST_DIR / str(step)), str(target))
        self._manager(LATEST_DIR).reload()

    def close(self) -> None:
        for manager in self._managers.values():
            manager.close()
        self._managers.clear()
