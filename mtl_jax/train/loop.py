"""Training, evaluation and prediction loops around the compiled steps.

``fit`` runs epochs of padded, per-epoch-shuffled batches through the train step,
evaluates on validation data after every epoch (and every ``eval_every_steps``) and
returns the final state and a history ``{"train/<task>/<metric>": [per epoch],
"validation/...": [...], "train/<task>/weight": [...], "epoch": [...]}``. Metrics are
combined exactly over each epoch from the steps' statistics (:mod:`mtl_jax.metrics`).
The host reads the device's outputs only at sync points (logging, evaluation,
checkpoints, epoch ends), so steps are dispatched without waiting on the device.

Given a ``workdir``, ``fit`` also keeps orbax checkpoints (:mod:`mtl_jax.train.checkpoint`),
writes ``metrics.jsonl`` and TensorBoard events (:mod:`mtl_jax.train.writers`), the best
checkpoint by a validation metric, ``history.json`` and PNG plots, and resumes exactly:
a run interrupted at any point (even ``kill -9``) and resumed with ``resume=True`` ends
with bitwise the same parameters, history and logs as an uninterrupted run.
"""
from __future__ import annotations

import contextlib
import json
import math
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, NamedTuple, Sequence

import flax.linen as nn
import jax
import numpy as np
import optax
from tqdm.auto import tqdm

from mtl_jax import checks
from mtl_jax.aggregation import certificate
from mtl_jax.data.batching import batches, steps_per_epoch
from mtl_jax.data.sources import head, is_record_source, num_examples
from mtl_jax.diagnostics import conflict
from mtl_jax.diagnostics.affinity import Affinities, affinity_table, make_affinity_step, strongest_partners
from mtl_jax.files import write_json
from mtl_jax.tasks import Task, static_weights, task_outputs
from mtl_jax.train import epoch_stats
from mtl_jax.train.checkpoint import CORRUPT_DIR, Checkpointer, Restored, abstract_of, saved_steps, set_aside_steps
from mtl_jax.train.monitor import Monitor
from mtl_jax.train.plots import plot_affinity, plot_gradient_conflict, plot_history, plot_task_weights
from mtl_jax.train.state import TrainState, create_train_state
from mtl_jax.train.step import InputKey, make_eval_step, make_predict_step, make_train_step, select_inputs
from mtl_jax.train.writers import MetricWriter, read_rows
from mtl_jax.train.workdir_lock import workdir_lock
from mtl_jax.balancing import Method
from mtl_jax.models.conv import convolution_path
from mtl_jax.weighting.static import static

History = dict[str, list[float]]
NonFinitePolicy = Literal["raise", "skip"]
SIGNATURE_FILE = "run_signature.json"
HISTORY_FILE = "history.json"

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


def _show_progress(progress: bool | None) -> bool:
    """The tqdm bar: on a terminal (``progress=None``), or when asked for."""
    return sys.stderr.isatty() if progress is None else progress


def _epoch_lines(progress: bool | None) -> bool:
    """One line per epoch instead of the bar where stderr is not a terminal (CI, nohup, cluster
    jobs), unless progress output was switched off."""
    return progress is None and not sys.stderr.isatty()


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


def run_signature(tasks: Sequence[Task], abstract_state, convolution: str | None = None) -> dict:
    """What a checkpoint's shape depends on (the tasks and every array's shape and dtype) and,
    for a model with a ``conv`` option, the convolution path it takes
    (:func:`mtl_jax.models.conv.convolution_path`): a resume must compute what the run would have."""
    leaves = jax.tree_util.tree_flatten_with_path(abstract_state)[0]
    signature = {"tasks": {t.name: {"kind": t.kind, "output_dim": t.output_dim} for t in tasks},
                 "arrays": {jax.tree_util.keystr(path): f"{leaf.dtype}{list(leaf.shape)}" for path, leaf in leaves}}
    if convolution is not None:
        signature["convolution"] = convolution
    return signature


def signature_mismatch(saved: dict, current: dict) -> str | None:
    """A readable description of how ``current`` differs from ``saved``, or None."""
    problems = []
    old_tasks, new_tasks = saved["tasks"], current["tasks"]
    if list(old_tasks) != list(new_tasks):
        problems.append(f"tasks were {list(old_tasks)}, now {list(new_tasks)}")
    changed = [f"{name}: {old_tasks[name]} -> {new_tasks[name]}" for name in old_tasks
               if name in new_tasks and old_tasks[name] != new_tasks[name]]
    problems += [f"task {c}" for c in changed]
    old, new = saved["arrays"], current["arrays"]
    if not problems and old != new:
        diffs = [f"{k}: {old.get(k, 'absent')} -> {new.get(k, 'absent')}"
                 for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
        problems.append(f"{len(diffs)} array shapes differ (model or optimizer changed), e.g. "
                        + "; ".join(diffs[:4]))
    if saved.get("convolution", current.get("convolution")) != current.get("convolution"):
        problems.append(f"its convolutions ran on the {saved['convolution']} path and would now run on "
                        f"{current.get('convolution')} (different rounding): start both in the same setting "
                        "(mtl_jax.cpu.enable_fast_convolutions() before JAX starts, as the mtl-jax command does; "
                        "MTL_JAX_KEEP_XLA_FLAGS=1 keeps it off), or choose the model's conv explicitly")
    return "; ".join(problems) or None


def previous_run(workdir: Path) -> str | None:
    """What in ``workdir`` shows that a run trained there (and checkpointed), or None.

    Latest checkpoints, checkpoints set aside as damaged, and the files a run writes when it
    ends (``history.json``, ``results.json``). A run killed before its first checkpoint leaves
    none of them: the steps it logged are simply trained again.
    """
    found = []
    if saved_steps(workdir):
        found.append(f"checkpoints up to step {saved_steps(workdir)[-1]}")
    if set_aside_steps(workdir):
        found.append(f"damaged checkpoints {set_aside_steps(workdir)} in {CORRUPT_DIR}/")
    found += [name for name in (HISTORY_FILE, "results.json") if (workdir / name).exists()]
    return ", ".join(found) or None


def open_run(workdir: Path, checkpointer: Checkpointer, resume: bool, signature: dict, abstract_state,
             abstract_output: Callable[[], Any]) -> Restored | None:
    """Decides, before anything is written, whether a run may use ``workdir``; returns the
    checkpoint to continue from (None: start at step 0).

    A new run (``resume=False``) needs a workdir without a previous run. A resumed run needs a
    usable checkpoint whenever a previous run exists: it never starts again from step 0 over a
    previous run's logs. Only damaged checkpoints are set aside; one of another shape stops the
    run with the differences named.
    """
    previous = previous_run(workdir)
    if not resume:
        if previous:
            raise FileExistsError(f"workdir {str(workdir)!r} already holds a run ({previous}); resume it "
                                  "(resume=True / --resume) or choose another workdir")
        return None
    restored = None
    if checkpointer.steps():
        saved = json.loads((workdir / SIGNATURE_FILE).read_text()) if (workdir / SIGNATURE_FILE).exists() else None
        problem = saved and signature_mismatch(saved, signature)
        if problem:
            raise ValueError(f"cannot resume {str(workdir)!r} with this configuration: {problem}. "
                             "Resume with the original tasks and model, or start a new workdir")
        restored = checkpointer.restore_latest(abstract_state, abstract_output())
    if restored is None and previous_run(workdir):
        raise FileNotFoundError(
            f"cannot resume {str(workdir)!r}: it holds a previous run ({previous_run(workdir)}) but no usable "
            "checkpoint, and starting again from step 0 would overwrite its metrics.jsonl and history. Its files "
            "are left as they are: train into a new workdir (or move this one's files away to start over)")
    return restored


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
        run_files: Mapping[str, Any] | None = None) -> FitResult:
    """Trains ``model`` on ``tasks`` for ``epochs`` epochs and returns ``(state, history)``.

    Args:
      train, validation: dicts of numpy arrays (inputs under ``input_key``, each task's target),
        or :class:`~mtl_jax.data.sources.RecordSource` s over random-access sources (a TFDS or
        grain data source), read batch by batch by grain's worker threads: memory bounded by
        the batch, not the dataset. A source's first examples are checked before anything is
        compiled, the rest as each batch is read.
      optimizer: any optax optimizer; default ``optax.adam(1e-3)``.
      weighting: a :class:`~mtl_jax.balancing.Method` (a weighting, an aggregator or a ``chain`` of them); default the tasks' static lambdas.
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
    tasks = tuple(tasks)
    checks.check_tasks(model, tasks)
    check_train = checks.dataset_checks(model, tasks, train, input_key, "train")
    check_validation = (checks.dataset_checks(model, tasks, validation, input_key, "validation")
                        if validation is not None else None)
    if nonfinite not in ("raise", "skip"):
        raise ValueError(f"nonfinite must be 'raise' or 'skip', got {nonfinite!r}")
    for name, value in (("epochs", epochs), ("checkpoint_every_steps", checkpoint_every_steps),
                        ("eval_every_steps", eval_every_steps), ("log_every_steps", log_every_steps),
                        ("affinity_every_steps", affinity_every_steps), ("seed", seed)):
        checks.check_count(name, value, 0)
    for name, value in (("batch_size", batch_size), ("keep_checkpoints", keep_checkpoints),
                        ("eval_batch_size", 1 if eval_batch_size is None else eval_batch_size)):
        checks.check_count(name, value, 1)
    if batch_size > num_examples(train):
        warnings.warn(f"batch_size {batch_size} is larger than the {num_examples(train)} training examples: "
                      f"each step uses all {num_examples(train)} of them", stacklevel=2)
    if affinity_every_steps and affinity_learning_rate is None and learning_rate_fn is None:
        raise ValueError("affinity_every_steps needs the lookahead step size: affinity_learning_rate (or "
                         "learning_rate_fn)")
    monitor = None
    if best_metric or early_stopping_patience:
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
    optimizer = optimizer or DEFAULT_OPTIMIZER
    weighting = weighting or static(tuple(static_weights(tasks).tolist()))
    first = next(batches(train, batch_size))
    example = select_inputs(first, input_key)
    abstract_state = abstract_of(state) if state is not None else jax.eval_shape(
        lambda: create_train_state(model, tasks, optimizer, weighting, example, seed))
    checks.check_input_shape(model, abstract_state.params, example, "train inputs")
    if validation is not None:
        checks.check_input_shape(model, abstract_state.params, select_inputs(head(validation, 8), input_key),
                                 "validation inputs")
    train_step = make_train_step(model, tasks, optimizer, weighting, input_key, penalty)
    eval_step = make_eval_step(model, tasks, input_key)
    affinity_step = make_affinity_step(model, tasks, input_key) if affinity_every_steps else None
    spe = steps_per_epoch(train, batch_size)

    meta = {"epoch": 0, "step_in_epoch": 0, "history": {"epoch": []}, "skipped_steps": 0,
            "monitor": Monitor.init(), "stopped_early": False, "affinity": Affinities.init(len(tasks)),
            "epoch_stats": epoch_stats.init()}
    checkpointer = writer = None
    with contextlib.ExitStack() as stack:
        if workdir is not None:
            workdir = stack.enter_context(workdir_lock(workdir))
            checkpointer = Checkpointer(workdir, keep_checkpoints)
            stack.callback(checkpointer.close)
            signature = run_signature(tasks, abstract_state, convolution_path(model))
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
        history: History = meta["history"]
        host_step = int(state.step)
        pending: list = []  # (step, device outputs) not yet read by the host
        pending_affinity: list = []  # (step, device [T, T] affinity) not yet read
        warned_solver = False  # an unconverged solver is reported once per fit

        def sync():
            """Reads pending outputs; logs every ``log_every_steps``; applies the non-finite policy."""
            nonlocal pending, pending_affinity, warned_solver
            got = jax.device_get([out for _, out in pending])
            for (step, _), out in zip(pending, got):
                if not bool(out["finite"]):
                    if nonfinite == "raise":
                        _raise_nonfinite(tasks, out, step, spe, checkpointer)
                    meta["skipped_steps"] += 1
                if not warned_solver and float(out.get("solver_ratio", 0.0)) > 1.0:
                    warned_solver = True
                    _warn_unconverged(state.weighting_state, out, step)
                meta["epoch_stats"] = epoch_stats.add(meta["epoch_stats"], tasks, out)
                if writer is not None and log_every_steps and step % log_every_steps == 0:
                    writer.write(step, _step_row(tasks, out, step, learning_rate_fn))
            for (step, _), matrix in zip(pending_affinity, jax.device_get([m for _, m in pending_affinity])):
                meta["affinity"] = Affinities.add(meta["affinity"], matrix)
                if writer is not None:
                    writer.write(step, {f"affinity/{a.name}->{b.name}": float(matrix[i, j])
                                        for i, a in enumerate(tasks) for j, b in enumerate(tasks)})
            pending_affinity = []
            if got:
                losses = got[-1]["loss_sum"] / np.maximum(got[-1]["loss_count"], 1)
                bar.set_postfix({**{t.name: f"{v:.3g}" for t, v in zip(tasks, losses)},
                                 **({"skipped": meta["skipped_steps"]} if meta["skipped_steps"] else {})})
            pending = []

        def validate(step: int) -> dict:
            result = {f"validation/{k}": v for k, v in
                      _evaluate(eval_step, tasks, state.params, validation, eval_batch_size or batch_size,
                                check_validation).items()}
            if monitor is not None:
                meta["monitor"], improved = monitor.update(meta["monitor"], result[monitor.metric], step)
                if improved and checkpointer is not None:
                    checkpointer.save_best(state, _saveable(meta))
            return result

        def checkpoint():
            if writer is not None:
                writer.flush()
            if checkpointer is not None:
                checkpointer.save(state, _saveable(meta))

        done = min(meta["epoch"] * spe + meta["step_in_epoch"], epochs * spe)
        lines, epoch_start = _epoch_lines(progress), time.perf_counter()
        bar = tqdm(total=epochs * spe, initial=done, disable=not _show_progress(progress), unit="step",
                   dynamic_ncols=True)
        try:
            while meta["epoch"] < epochs and not meta["stopped_early"]:
                epoch = meta["epoch"]
                bar.set_description(f"epoch {epoch + 1}/{epochs}")
                for batch in batches(train, batch_size, seed=seed, epoch=epoch, start_step=meta["step_in_epoch"],
                                     check=check_train):
                    if affinity_step is not None and (host_step + 1) % affinity_every_steps == 0:
                        rate = affinity_learning_rate if affinity_learning_rate is not None else learning_rate_fn(host_step)
                        pending_affinity.append((host_step + 1, affinity_step(state.params, batch, rate)))
                    state, out = train_step(state, batch)
                    host_step += 1
                    meta["step_in_epoch"] += 1
                    pending.append((host_step, out))
                    bar.update()
                    end = meta["step_in_epoch"] == spe
                    at_log = writer is not None and log_every_steps and host_step % log_every_steps == 0
                    at_eval = validation is not None and eval_every_steps and host_step % eval_every_steps == 0
                    at_save = checkpoint_every_steps and host_step % checkpoint_every_steps == 0
                    if not (end or at_log or at_eval or at_save):
                        continue
                    sync()
                    row = {}
                    if end:
                        row.update({f"train/{k}": v for k, v in epoch_stats.summary(tasks, meta["epoch_stats"]).items()})
                    if at_eval or (end and validation is not None):
                        row.update(validate(host_step))
                        if monitor is not None and monitor.should_stop(meta["monitor"]):
                            meta["stopped_early"] = True
                    if end and lines:
                        print(epoch_line(tasks, epoch + 1, epochs, time.perf_counter() - epoch_start, row),
                              file=sys.stderr, flush=True)
                        epoch_start = time.perf_counter()
                    if end:
                        history["epoch"].append(epoch + 1)
                        for key, value in row.items():
                            history.setdefault(key, []).append(value)
                        history.setdefault("skipped_steps", []).append(meta["skipped_steps"])
                        if affinity_step is not None:
                            history.setdefault("affinity", []).append(Affinities.epoch_mean(meta["affinity"]))
                            meta["affinity"] = Affinities.new_epoch(meta["affinity"])
                        meta.update(epoch=epoch + 1, step_in_epoch=0, epoch_stats=epoch_stats.init())
                    if writer is not None and row:
                        scalars = {k: v for k, v in row.items() if isinstance(v, (int, float))}
                        writer.write(host_step, {**scalars, **({"epoch": epoch + 1} if end else {})})
                    if end or at_save or meta["stopped_early"]:
                        checkpoint()
                    if meta["stopped_early"]:
                        break
        finally:
            bar.close()
            if writer is not None:
                writer.close()
            if checkpointer is not None:
                checkpointer.close()
        if workdir is not None:
            write_json(workdir / HISTORY_FILE, history)
            if history["epoch"]:
                plot_history(history, tasks, workdir / "training_progress.png")
                plot_task_weights(read_rows(workdir / "metrics.jsonl"), tasks, workdir / "task_weights.png")
                if history.get("train/gradient_cosines"):
                    plot_gradient_conflict(history, tasks, workdir / "gradient_conflict.png")
            if affinity_step is not None and meta["affinity"]["count"]:
                _write_affinity(workdir, tasks, Affinities.mean(meta["affinity"]), meta["affinity"]["count"])
        return FitResult(state, history)


def _write_affinity(workdir: Path, tasks: Sequence[Task], matrix, count: int) -> None:
    """``affinity.json`` (matrix, measurements, strongest partners, markdown table) and ``affinity.png``."""
    write_json(workdir / "affinity.json", {
        "tasks": [t.name for t in tasks], "affinity": np.asarray(matrix).tolist(), "measurements": count,
        "rows": "the task stepped on", "columns": "the task whose loss changes",
        "partners": strongest_partners(matrix, tasks), "table": affinity_table(matrix, tasks)})
    plot_affinity(matrix, tasks, workdir / "affinity.png")


def _step_row(tasks, out, step, learning_rate_fn) -> dict:
    row = {}
    for i, task in enumerate(tasks):
        count = float(out["loss_count"][i])
        row[f"train/{task.name}/step_loss"] = float(out["loss_sum"][i]) / count if count else float("nan")
        row[f"train/{task.name}/weight"] = float(out["weights"][i])
    row["train/grad_norm"] = float(out["grad_norm"])
    row["train/skipped"] = float(not bool(out["finite"]))
    if "gramian" in out:
        row.update(conflict.step_row(tasks, out["gramian"]))
    if "penalty" in out:
        row["train/penalty"] = float(out["penalty"])
    if "solver_residual" in out:
        row["train/solver_residual"] = float(out["solver_residual"])
    if learning_rate_fn is not None:
        row["train/learning_rate"] = float(learning_rate_fn(step - 1))
    return row


def _warn_unconverged(weighting_state, out, step) -> None:
    names = ", ".join(certificate.methods(weighting_state)) or "the aggregation method"
    ratio, residual = float(out["solver_ratio"]), float(out["solver_residual"])
    warnings.warn(f"{names}: the solver's residual {residual:.3g} at step {step} is {ratio:.3g}x its tolerance, so "
                  "this step's direction is not certified exact (logged as train/solver_residual; reported once). "
                  "In float32 badly conditioned or nearly Pareto-stationary task gradients cause it: "
                  "jax.config.update('jax_enable_x64', True) computes the Gramian and the solve in float64",
                  RuntimeWarning, stacklevel=3)


def _raise_nonfinite(tasks, out, step, spe, checkpointer):
    bad = [t.name for t, total in zip(tasks, out["loss_sum"]) if not math.isfinite(float(total))]
    norm = float(out["grad_norm"])
    what = (f"loss for task(s) {bad}" if bad else f"gradient (norm {norm}; losses finite)" if not math.isfinite(norm)
            else f"update (losses and gradient norm {norm:.3g} finite; the new parameters or optimizer state "
                 "overflowed)")
    saved = checkpointer.steps() if checkpointer is not None else []
    last = f"; the last checkpoint is step {saved[-1]}" if saved else ""
    raise FloatingPointError(
        f"non-finite {what} at step {step} (epoch {(step - 1) // spe + 1}); training stopped and this state "
        f"was not checkpointed{last}. Lower the learning rate, clip gradients, check the targets, or pass "
        "nonfinite='skip' to drop such steps")


def evaluate(model: nn.Module, tasks: Sequence[Task], params, data,
             batch_size: int = 256, input_key: InputKey = "image") -> dict[str, float]:
    """Exact metrics ``{"<task>/loss", "<task>/<metric>"}`` of ``params`` on ``data`` (a dict of
    arrays or a :class:`~mtl_jax.data.sources.RecordSource`, read batch by batch)."""
    tasks = tuple(tasks)
    checks.check_tasks(model, tasks)
    checks.check_count("batch_size", batch_size, 1)
    check = checks.dataset_checks(model, tasks, data, input_key)
    checks.check_input_shape(model, params, select_inputs(head(data, 8), input_key))
    return _evaluate(make_eval_step(model, tasks, input_key), tasks, params, data, batch_size, check)


def _evaluate(eval_step, tasks, params, data, batch_size, check=None):
    """Folds each batch's statistics as it comes (memory bounded by the batch, not the split)."""
    stats = epoch_stats.init()
    for batch in batches(data, batch_size, check=check):
        stats = epoch_stats.add(stats, tasks, eval_step(params, batch))
    return epoch_stats.summary(tasks, stats)


def predict(model: nn.Module, tasks: Sequence[Task], params, inputs, batch_size: int = 256,
            input_key: InputKey = "image") -> dict[str, Any]:
    """Per-task predictions for ``inputs``: an array, a dict of arrays for multi-input models, or a
    :class:`~mtl_jax.data.sources.RecordSource` whose records' ``input_key`` feeds the model
    (read batch by batch).

    Returns ``{task: output}`` as described in :func:`mtl_jax.tasks.task_outputs`:
    values for regression, ``{"probabilities", "labels"}`` for classification kinds.
    """
    tasks = tuple(tasks)
    checks.check_tasks(model, tasks)
    if is_record_source(inputs):
        data, key = inputs, input_key
    else:
        data = inputs if isinstance(inputs, Mapping) else {"inputs": inputs}
        key = tuple(data) if isinstance(inputs, Mapping) else "inputs"
    checks.check_count("batch_size", batch_size, 1)
    if num_examples(data) == 0:
        raise ValueError("predict: no inputs (0 examples)")

    def check(batch):
        checks.check_inputs(batch, key, "predict")
        checks.check_id_ranges(model, select_inputs(batch, key), "predict inputs")

    if not is_record_source(data):
        check(data)
    checks.check_input_shape(model, params, select_inputs(head(data, 8), key), "predict inputs")
    predict_step = make_predict_step(model)
    n = num_examples(data)
    raw = [jax.device_get(predict_step(params, select_inputs(batch, key)))
           for batch in batches(data, batch_size, check=check if is_record_source(data) else None)]
    return {t.name: task_outputs(t, np.concatenate([r[t.name] for r in raw])[:n]) for t in tasks}
