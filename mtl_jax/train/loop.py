"""``fit``, ``evaluate`` and ``predict``: the compiled steps, the data and the hooks put together.

``fit`` runs epochs of padded, per-epoch-shuffled batches through the train step with
:func:`~mtl_jax.train.train_loop.train_loop`, evaluates on validation data after every epoch
(and every ``eval_every_steps``) and returns the final state and a history
``{"train/<task>/<metric>": [per epoch], "validation/...": [...], "epoch": [...], ...}``.
Metrics are combined exactly over each epoch from the steps' statistics
(:mod:`mtl_jax.metrics`). Everything beyond stepping is a hook (:mod:`mtl_jax.train.hooks`).

Given a ``workdir``, ``fit`` also keeps orbax checkpoints (:mod:`mtl_jax.train.checkpoint`),
writes ``metrics.jsonl`` and TensorBoard events (:mod:`mtl_jax.train.writers`), the best
checkpoint by a validation metric, ``history.json`` and PNG plots, and resumes exactly:
a run interrupted at any point (even ``kill -9``) and resumed with ``resume=True`` ends
with bitwise the same parameters, history and logs as an uninterrupted run.
"""
from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import flax
import flax.linen as nn
import jax
import numpy as np
import optax
from jax.sharding import Mesh

from mtl_jax import checks
from mtl_jax.balancing import Method
from mtl_jax.data.batch_streams import as_dataset, is_batch_stream, pad_batch
from mtl_jax.data.batch_streams import rows as batch_rows
from mtl_jax.data.batching import batches, first_batch, steps_per_epoch
from mtl_jax.data.sources import head, is_record_source, num_examples
from mtl_jax.data.task_mixture import is_mixture
from mtl_jax.diagnostics.affinity import make_affinity_step
from mtl_jax.files import write_json
from mtl_jax.models.conv import convolution_path
from mtl_jax.models.mixed_precision import precision_of
from mtl_jax.tasks import EXAMPLE_MASK_KEY, Task, static_weights, task_outputs
from mtl_jax.train import epoch_stats
from mtl_jax.train.checkpoint import Checkpointer, abstract_of
from mtl_jax.train.hooks import (EVENTS, HISTORY_FILE, Affinity, BestCheckpoint, Checkpointing, Evaluation, Hook,
                                 MetricLog, NonFinite, NonFinitePolicy, Progress, RunFiles, SolverCheck, epoch_line,
                                 progress_mode)
from mtl_jax.train.mesh import (FSDP_MIN_SIZE, check_batch_size, check_fsdp_min_size, data_size, place_state,
                                process_shard, shard_batches, state_shardings)
from mtl_jax.train.monitor import Monitor
from mtl_jax.train.run_workdir import SIGNATURE_FILE, open_run, previous_run, run_signature, signature_mismatch
from mtl_jax.train.state import TrainState, create_train_state
from mtl_jax.train.step import (InputKey, make_eval_step, make_placed_eval_step, make_placed_predict_step,
                                make_placed_train_step, make_predict_step, make_train_step,
                                select_inputs)
from mtl_jax.train.train_loop import Run, new_meta, train_loop
from mtl_jax.train.workdir_lock import workdir_lock
from mtl_jax.train.writers import MetricWriter
from mtl_jax.weighting.static import static

__all__ = ["FitResult", "evaluate", "fit", "predict", "summarize", "epoch_line", "previous_run", "run_signature",
           "signature_mismatch", "HISTORY_FILE", "SIGNATURE_FILE"]

History = dict[str, list[float]]

# Module-level so repeated fit() calls without an explicit optimizer reuse the compiled step.
DEFAULT_OPTIMIZER = optax.adam(1e-3)


class FitResult(NamedTuple):
    state: TrainState
    history: History


def summarize(tasks: Sequence[Task], outputs: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Exact epoch metrics ``{"<task>/loss", "<task>/<metric>", ...}`` from per-step outputs
    (:mod:`mtl_jax.train.epoch_stats`). Steps flagged non-finite (skipped by the ``"skip"``
    policy) are left out."""
    return epoch_stats.summary(tasks, epoch_stats.fold(tasks, outputs))


def _saveable(meta: dict) -> dict:
    """``meta`` as the checkpoint's JSON item: the epoch's accumulator as lists."""
    return {**meta, "epoch_stats": epoch_stats.as_json(meta["epoch_stats"])}


def _monitor(best_metric, early_stopping_patience, min_delta, tasks, validation) -> Monitor | None:
    """The validation metric to watch, checked against the tasks' reported metrics."""
    if not (best_metric or early_stopping_patience):
        return None
    if not best_metric:
        raise ValueError("early stopping needs best_metric, the validation metric it watches")
    monitor = Monitor(best_metric, early_stopping_patience, min_delta)
    if validation is None:
        raise ValueError(f"best_metric {best_metric!r} needs validation data")
    task_name, metric_name = monitor.metric.split("/")[1:]
    task = next((t for t in tasks if t.name == task_name), None)
    if task is None or metric_name not in ("loss", *task.metrics):
        known = [f"{t.name}/{m}" for t in tasks for m in ("loss", *t.metrics)]
        raise ValueError(f"best_metric {best_metric!r} is not reported; choose one of {known}")
    return monitor


def checked_data(model, tasks, train, validation, input_key, nonfinite, epochs):
    """What ``fit`` and ``fit_seeds`` check first: the tasks against the model, the data (each as
    a dataset, with its per-batch check), ``nonfinite`` and an iterator read more than once.
    Returns ``(tasks, train, validation, check_train, check_validation)``."""
    tasks = tuple(tasks)
    checks.check_tasks(model, tasks)
    train, validation = as_dataset(train, "train"), as_dataset(validation, "validation")
    check_train = checks.dataset_checks(model, tasks, train, input_key, "train")
    check_validation = (checks.dataset_checks(model, tasks, validation, input_key, "validation")
                        if validation is not None else None)
    if nonfinite not in ("raise", "skip"):
        raise ValueError(f"nonfinite must be 'raise' or 'skip', got {nonfinite!r}")
    checks.check_count("epochs", epochs, 0)
    if is_batch_stream(train) and train.kind == "iterator" and epochs > 1:
        raise ValueError(f"train is an iterator of batches, which can be read only once, but epochs={epochs}: pass "
                         "a list, a re-iterable, or a function epoch -> batches")
    return tasks, train, validation, check_train, check_validation


def fit(model: nn.Module, tasks: Sequence[Task], train, *,
        validation=None, epochs: int = 10, batch_size: int = 64,
        optimizer: optax.GradientTransformation | None = None, weighting: Method | None = None,
        seed: int = 0, input_key: InputKey = "image", eval_batch_size: int | None = None,
        state: TrainState | None = None, progress: bool | None = None,
        workdir: str | Path | None = None, resume: bool = False, checkpoint_every_steps: int = 0,
        keep_checkpoints: int = 3, best_metric: str | None = None, early_stopping_patience: int = 0,
        min_delta: float = 0.0, eval_every_steps: int = 0, log_every_steps: int = 10,
        nonfinite: NonFinitePolicy = "raise", learning_rate_fn: Callable[[int], float] | None = None,
        tensorboard: bool = True, affinity_every_steps: int = 0,
        affinity_learning_rate: float | None = None, penalty: Callable | None = None,
        run_files: Mapping[str, Any] | None = None, hooks: Sequence[Hook] = (),
        async_checkpoints: bool = True, plots: bool = True, mesh: Mesh | None = None,
        fsdp_min_size: int = FSDP_MIN_SIZE) -> FitResult:
    """Trains ``model`` on ``tasks`` for ``epochs`` epochs and returns ``(state, history)``.

    Args:
      train, validation: dicts of numpy arrays (inputs under ``input_key``, each task's target);
        :class:`~mtl_jax.data.sources.RecordSource` s over random-access sources (a TFDS or
        grain data source), read batch by batch by grain's worker threads: memory bounded by
        the batch, not the dataset; or any iterable of batch dicts, or a function
        ``epoch -> batches`` (:mod:`mtl_jax.data.batch_streams`; ``batch_size`` and ``seed``
        do not apply to its order), or ``(epoch, shard) -> batches`` reading only this
        process's part of every batch (several processes); or, for multi-input MTL, a
        :class:`~mtl_jax.data.task_mixture.TaskMixture` of one dataset per task (``batch_size``
        rows per dataset read). A source's or iterable's first examples are checked before
        anything is compiled, the rest as each batch is read.
      optimizer: any optax optimizer; default ``optax.adam(1e-3)``.
      weighting: a :class:`~mtl_jax.balancing.Method` (a weighting, an aggregator or a ``chain``
        of them); default the tasks' static lambdas.
      seed: fixes initialisation, dropout and the shuffling of every epoch.
      progress: None (default): a tqdm bar on a terminal, else one line per epoch on stderr
        (epoch, seconds, per task the train and validation loss and headline metric); True:
        the bar; False: nothing.
      state: continue from this state (its step counts on) instead of initialising. Its
        buffers are donated to the compiled step: use the returned state, not this one.
      workdir: where checkpoints, ``metrics.jsonl``, TensorBoard events, ``history.json`` and
        plots go. Without it nothing is written.
      resume: continue from the latest readable checkpoint in ``workdir``. Without it a
        workdir that already holds checkpoints is refused.
      checkpoint_every_steps: also checkpoint every N steps (0: at epoch ends only).
      keep_checkpoints: how many latest checkpoints to keep.
      best_metric: keep the best checkpoint by this validation metric (``"price/rmse"``).
      early_stopping_patience: stop after this many evaluations without improvement of
        ``best_metric`` by more than ``min_delta`` (0: never).
      eval_every_steps: also evaluate on validation data every N steps (0: epoch ends only).
      log_every_steps: write a step's losses, weights and gradient norm every N steps.
      nonfinite: ``"raise"`` stops at a non-finite loss or gradient with an error naming
        the tasks and the step; ``"skip"`` leaves the state unchanged for that step and
        counts it (``history["skipped_steps"]``). No non-finite state is ever checkpointed.
      learning_rate_fn: the optimizer's schedule, to log the learning rate.
      affinity_every_steps: measure the inter-task affinity (:mod:`mtl_jax.diagnostics.affinity`)
        on the batch about to be trained on every N steps (0: never); its per-epoch mean goes to
        ``history["affinity"]``, the run's mean to ``affinity.json`` and ``affinity.png``.
      affinity_learning_rate: the lookahead step size (default: the schedule's rate at that step).
      penalty: an optional hashable ``params -> scalar`` added to the total loss (e.g. a
        :class:`~mtl_jax.models.sharing_penalties.SharingPenalty`); logged as ``train/penalty``.
      run_files: ``{file name: JSON value}`` written into ``workdir`` once the run is validated
        (e.g. the resolved config), so that a refused run leaves the workdir as it was.
      hooks: your own :class:`~mtl_jax.train.hooks.Hook` s, called after the built-in
        evaluation, non-finite and affinity hooks and before best-checkpoint tracking, logging
        and checkpointing (so that what they add to a row is logged and what they keep in
        ``run.meta`` is checkpointed).
      async_checkpoints: write checkpoints with orbax's asynchronous checkpointing: the step
        waits only for the arrays' copy, not for the disk (a step's folder still appears only
        once complete).
      mesh: a :class:`jax.sharding.Mesh` (:func:`~mtl_jax.train.mesh.make_mesh`): every batch's
        rows split over its devices, the state replicated on each, or, with an ``fsdp`` axis,
        its arrays of at least ``fsdp_min_size`` elements split over that axis
        (:mod:`mtl_jax.train.mesh`); the same run as on one device up to float rounding.
        ``batch_size`` must divide by the mesh's device count.
      plots: with a workdir, draw ``training_progress.png`` and ``task_weights.png`` (and the
        gradient-conflict map) when training ends; ``history.json`` and the logs hold the same
        numbers, so scripted sweeps may skip the figures (about 0.8 s per run).

    ``fit`` is a composition of :func:`~mtl_jax.train.train_loop.train_loop` and the hooks of
    :mod:`mtl_jax.train.hooks`; use those directly for a loop of your own.

    When the weighting forms a Gramian of the task gradients (gradient methods, or any
    method with :func:`~mtl_jax.balancing.observed`), the logged rows also carry the
    gradient cosines and conflicting pairs (:mod:`mtl_jax.diagnostics.conflict`), the history
    the per-epoch mean cosine matrix, and the workdir ``gradient_conflict.png``.

    Nothing is written to ``workdir`` until the data, options and (when resuming) the
    checkpoint are validated, and only one process at a time may write to it
    (:mod:`mtl_jax.train.workdir_lock`).

    Raises:
      ValueError / KeyError: bad data, tasks or options (before anything is compiled).
      FileExistsError: ``workdir`` holds a run and ``resume`` is False.
      FileNotFoundError: ``resume`` on a workdir whose previous run left no usable checkpoint.
      CheckpointMismatch: the checkpoint to resume has other array shapes than this configuration.
      WorkdirInUse: another process is writing to ``workdir``.
      PermissionError: ``workdir`` is not writable.
      FloatingPointError: non-finite loss or gradient under ``nonfinite="raise"``.
    """

    tasks, train, validation, check_train, check_validation = checked_data(model, tasks, train, validation,
                                                                           input_key, nonfinite, epochs)
    for name, value in (("checkpoint_every_steps", checkpoint_every_steps),
                        ("eval_every_steps", eval_every_steps), ("log_every_steps", log_every_steps),
                        ("affinity_every_steps", affinity_every_steps), ("seed", seed)):
        checks.check_count(name, value, 0)
    for name, value in (("batch_size", batch_size), ("keep_checkpoints", keep_checkpoints),
                        ("eval_batch_size", 1 if eval_batch_size is None else eval_batch_size)):
        checks.check_count(name, value, 1)
    if not is_batch_stream(train) and not is_mixture(train) and batch_size > num_examples(train):
        warnings.warn(f"batch_size {batch_size} is larger than the {num_examples(train)} training examples: "
                      f"each step uses all {num_examples(train)} of them", stacklevel=2)
    if affinity_every_steps and affinity_learning_rate is None and learning_rate_fn is None:
        raise ValueError("affinity_every_steps needs the lookahead step size: affinity_learning_rate (or "
                         "learning_rate_fn)")
    for hook in hooks:
        missing = [name for name in EVENTS if not callable(getattr(hook, name, None))]
        if missing:
            raise TypeError(f"hooks: {hook!r} is not a mtl_jax.train.hooks.Hook (it lacks {missing}; subclass Hook "
                            "for no-op defaults)")
    monitor = _monitor(best_metric, early_stopping_patience, min_delta, tasks, validation)
    for data in (train, validation):
        _parts(data, mesh)  # a function of (epoch, shard) across processes needs a mesh
    if mesh is not None and is_batch_stream(train):
        check_batch_size(mesh, train.global_rows or train.batch_size,
                         "the first batch's size (every process's part together)")
    elif mesh is not None:
        check_batch_size(mesh, batch_size if is_mixture(train) else min(batch_size, num_examples(train)))
    check_fsdp_min_size(fsdp_min_size)
    optimizer = optimizer or DEFAULT_OPTIMIZER
    weighting = weighting or static(tuple(static_weights(tasks).tolist()))
    first = first_batch(train, batch_size)
    example = select_inputs(first, input_key)
    try:
        abstract_state = abstract_of(state) if state is not None else jax.eval_shape(
            lambda: create_train_state(model, tasks, optimizer, weighting, example, seed))
    except (TypeError, ValueError, flax.errors.FlaxError) as error:
        checks.check_model_takes(model, example, "train inputs")  # the inputs' fault: named with their shape
        raise
    checks.check_input_shape(model, abstract_state.params, example, "train inputs")
    if validation is not None:
        checks.check_input_shape(model, abstract_state.params, select_inputs(head(validation, 8), input_key),
                                 "validation inputs")
    train_step = (make_train_step(model, tasks, optimizer, weighting, input_key, penalty) if mesh is None else
                  make_placed_train_step(model, tasks, optimizer, weighting, input_key, penalty,
                                         state_shardings(mesh, abstract_state, fsdp_min_size)))
    eval_step = make_eval_step(model, tasks, input_key) if mesh is None else make_placed_eval_step(
        model, tasks, input_key, mesh)

    meta, checkpointer, writer = new_meta(), None, None
    with contextlib.ExitStack() as stack:
        if workdir is not None:
            workdir = stack.enter_context(workdir_lock(workdir))
            checkpointer = Checkpointer(workdir, keep_checkpoints, asynchronous=async_checkpoints)
            stack.callback(checkpointer.close)
            signature = run_signature(tasks, abstract_state, convolution_path(model), precision_of(model))
            restored = open_run(workdir, checkpointer, resume, signature, abstract_state,
                                lambda: jax.eval_shape(train_step, abstract_state, first)[1])
            if restored is not None:
                state, meta = restored.state, restored.meta
                if "epoch_stats" not in meta:  # written by an older mtl_jax: the epoch's step outputs
                    meta["epoch_stats"] = epoch_stats.fold(tasks, restored.epoch_outputs)
            # Validated: from here on the run writes into its workdir.
            for name, value in (run_files or {}).items():
                write_json(workdir / name, value)
            write_json(workdir / SIGNATURE_FILE, signature)
            writer = MetricWriter(workdir, tensorboard, resume_step=restored.step if restored else None)
            stack.callback(writer.close)
        if state is None:
            state = create_train_state(model, tasks, optimizer, weighting, example, seed)
        state = place_state(mesh, state, fsdp_min_size)

        loop_hooks: list = []
        if validation is not None:
            loop_hooks.append(Evaluation(lambda params: _evaluate(eval_step, tasks, params, validation,
                                                                  eval_batch_size or batch_size, check_validation,
                                                                  mesh), eval_every_steps))
        loop_hooks += [NonFinite(nonfinite, checkpointer), SolverCheck()]
        if affinity_every_steps:
            rate = ((lambda step: affinity_learning_rate) if affinity_learning_rate is not None
                    else learning_rate_fn)
            loop_hooks.append(Affinity(make_affinity_step(model, tasks, input_key), affinity_every_steps, rate,
                                       writer))
        loop_hooks += list(hooks)
        if monitor is not None:
            loop_hooks.append(BestCheckpoint(monitor, checkpointer, _saveable))
        loop_hooks.append(Progress(progress_mode(progress)))
        if writer is not None:
            loop_hooks += [MetricLog(writer, log_every_steps, learning_rate_fn),
                           Checkpointing(checkpointer, checkpoint_every_steps, _saveable), RunFiles(plots)]

        run = Run(tasks, state, meta, epochs, steps_per_epoch(train, batch_size), workdir, step=int(state.step))
        # each process reads only its devices' rows of every batch of arrays, records or a task
        # mixture, and of a function (epoch, shard) of batches; other batches are read whole by every process
        rows = (train.global_rows if is_batch_stream(train) else len(first[EXAMPLE_MASK_KEY]) if is_mixture(train)
                else min(batch_size, num_examples(train)))
        shard = (0, 1) if rows is None else process_shard(mesh, rows)
        train_loop(train_step, run, lambda epoch, start: shard_batches(mesh, batches(
            train, batch_size, seed=seed, epoch=epoch, start_step=start, check=check_train, shard=shard),
            global_rows=rows), loop_hooks)
        return FitResult(run.state, run.history)


def evaluate(model: nn.Module, tasks: Sequence[Task], params, data,
             batch_size: int = 256, input_key: InputKey = "image", mesh: Mesh | None = None,
             fsdp_min_size: int = FSDP_MIN_SIZE) -> dict[str, float]:
    """Exact metrics ``{"<task>/loss", "<task>/<metric>"}`` of ``params`` on ``data`` (a dict of
    arrays, a :class:`~mtl_jax.data.sources.RecordSource` or an iterable of batches, read batch
    by batch). ``mesh``: every batch's rows split over its devices (padded to a multiple of
    their count), ``params`` placed as ``fit`` places them with the same ``fsdp_min_size``
    (:mod:`mtl_jax.train.mesh`; parameters ``fit`` returned are used where they are)."""
    tasks = tuple(tasks)
    checks.check_tasks(model, tasks)
    data = as_dataset(data)
    checks.check_count("batch_size", batch_size, 1)
    check = checks.dataset_checks(model, tasks, data, input_key)
    checks.check_input_shape(model, params, select_inputs(head(data, 8), input_key))
    if mesh is None:
        return _evaluate(make_eval_step(model, tasks, input_key), tasks, params, data, batch_size, check)
    return _evaluate(make_placed_eval_step(model, tasks, input_key, mesh), tasks,
                     place_state(mesh, params, fsdp_min_size), data, batch_size, check, mesh)


def _evaluate(eval_step, tasks, params, data, batch_size, check=None, mesh=None):
    """Folds each batch's statistics as it comes (memory bounded by the batch, not the split).
    On a mesh every batch's rows are split over its devices (padded with masked rows to a
    multiple of the device count), as in training."""
    stats = epoch_stats.init()
    parts = _parts(data, mesh)
    if parts == 1:
        read = shard_batches(mesh, _padded_for(mesh, batches(data, batch_size, check=check)))
    else:  # each process's part of every batch (all of one size), padded for its own devices
        local = data_size(mesh) // parts
        rows = -(-data.batch_size // local) * local
        read = shard_batches(mesh, (pad_batch(batch, rows) for batch in batches(
            data, batch_size, check=check, shard=data.shard)), global_rows=rows * parts)
    for batch in read:
        stats = epoch_stats.add(stats, tasks, eval_step(params, batch))
    return epoch_stats.summary(tasks, stats)


def _parts(data, mesh: Mesh | None) -> int:
    """How many processes each read a part of every batch of ``data`` (1: each reads it whole);
    an error where no mesh joins their parts."""
    count = data.shard[1] if is_batch_stream(data) and data.shard is not None else 1
    if count > 1 and mesh is None:
        raise ValueError(f"a function (epoch, shard) reads one part of every batch in each of {count} processes: "
                         "give a mesh over every process's devices (mesh=make_mesh()) to join the parts")
    return count


def _padded_for(mesh: Mesh | None, read):
    """Each batch padded with masked rows to a multiple of the mesh's device count (as it is
    without a mesh)."""
    if mesh is None:
        return read
    devices = data_size(mesh)
    return (pad_batch(batch, -(-batch_rows(batch) // devices) * devices) for batch in read)


def predict(model: nn.Module, tasks: Sequence[Task], params, inputs, batch_size: int = 256,
            input_key: InputKey = "image", mesh: Mesh | None = None,
            fsdp_min_size: int = FSDP_MIN_SIZE) -> dict[str, Any]:
    """Per-task predictions for ``inputs``: an array, a dict of arrays for multi-input models, a
    :class:`~mtl_jax.data.sources.RecordSource` whose records' ``input_key`` feeds the model
    (read batch by batch), or an iterable of batch dicts holding ``input_key`` (padding rows are
    dropped from the result). ``mesh``, ``fsdp_min_size``: as for :func:`evaluate`.

    Returns ``{task: output}`` as described in :func:`mtl_jax.tasks.task_outputs`:
    values for regression, ``{"probabilities", "labels"}`` for classification kinds.
    """
    tasks = tuple(tasks)
    checks.check_tasks(model, tasks)
    if not isinstance(inputs, (Mapping, np.ndarray)) and not is_record_source(inputs) and not hasattr(inputs, "shape"):
        inputs = as_dataset(inputs, "predict inputs")
    streamed = is_record_source(inputs) or is_batch_stream(inputs)
    if streamed:
        data, key = inputs, input_key
    else:
        data = inputs if isinstance(inputs, Mapping) else {"inputs": inputs}
        key = tuple(data) if isinstance(inputs, Mapping) else "inputs"
    checks.check_count("batch_size", batch_size, 1)
    if not is_batch_stream(data) and num_examples(data) == 0:
        raise ValueError("predict: no inputs (0 examples)")
    if is_batch_stream(data) and data.shard is not None and data.shard[1] > 1:
        raise ValueError("predict reads whole batches in every process: give it arrays, a record source, or batches "
                         "without the shard parameter")

    def check(batch):
        checks.check_inputs(batch, key, "predict")
        checks.check_id_ranges(model, select_inputs(batch, key), "predict inputs")

    if not streamed:
        check(data)
    checks.check_input_shape(model, params, select_inputs(head(data, 8), key), "predict inputs")
    if mesh is None:
        predict_step = make_predict_step(model)
    else:
        predict_step, params = make_placed_predict_step(model, mesh), place_state(mesh, params, fsdp_min_size)
    raw, valid = [], []
    for batch in _padded_for(mesh, batches(data, batch_size, check=check if streamed else None)):
        valid.append(np.asarray(batch["_valid"]) > 0)
        inputs = select_inputs(batch, key)
        if mesh is not None:
            inputs = next(shard_batches(mesh, [inputs]))
        raw.append(jax.device_get(predict_step(params, inputs)))
    valid = np.concatenate(valid)
    return {t.name: task_outputs(t, np.concatenate([r[t.name] for r in raw])[valid]) for t in tasks}
