"""An epoch's statistics as a fixed-size accumulator, folded step by step.

``fit`` folds every step's outputs (read to the host) into one accumulator and turns it into
the epoch's numbers at the epoch's end; a mid-epoch checkpoint stores the accumulator in its
JSON ``meta``, so the checkpoint does not grow with the position in the epoch (apart from
metrics whose statistics are per-example, ``reduce="concat"``, such as AUC, which keep the
epoch's scores by definition). The accumulator holds float64 numpy arrays, kept as arrays
between steps (no per-step conversion) and turned into JSON lists only when a checkpoint is
written (:func:`as_json`; float64 reprs round-trip exactly), so a resumed epoch folds the same
numbers in the same order as an uninterrupted one and ends bitwise equal.

Fields (each present once a step provided it):
  ``steps``: finite steps folded (steps skipped under ``nonfinite="skip"`` are left out);
  ``loss_sum``, ``loss_count``: per task, over labelled examples;
  ``stats``: per task and metric, the metric's batch statistics (a dict of arrays) combined by
    its ``reduce``;
  ``weights`` / ``weights_steps``, ``penalty`` / ``penalty_steps``: sums for the epoch means;
  ``weights_present``: per task, the steps it was present in (a labelled element in the batch):
    a task's mean weight is over those (an absent task's weight of 0 is not averaged in);
  ``cosines`` / ``cosines_steps`` / ``conflicting_pairs``: for the mean gradient-cosine matrix;
  ``solver_residual``: the largest;
  ``overflow_steps``: a float16 run's dynamic loss-scale overflows (their losses and metrics are
    folded, their weights, Gramian and solver residual, of a step that applied nothing, not).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import numpy as np

from mtl_jax import metrics as metrics_lib
from mtl_jax.diagnostics import conflict
from mtl_jax.tasks import Task

Stats = dict


def init() -> Stats:
    return {"steps": 0}


def _float64(value) -> np.ndarray:
    return np.asarray(value, np.float64)


def _add(total, value):
    return _float64(total) + _float64(value)


def as_json(stats: Stats) -> Stats:
    """``stats`` with every array as (nested) lists of Python floats, for the checkpoint's JSON
    meta; exact (float64 reprs round-trip), and what :func:`add` and :func:`summary` also take."""
    if isinstance(stats, dict):
        return {key: as_json(value) for key, value in stats.items()}
    return stats.tolist() if isinstance(stats, np.ndarray) else stats


def _metric_stats(value, task: str, name: str) -> dict:
    if not isinstance(value, Mapping):
        raise TypeError(f"metric {name!r} of task {task!r}: batch statistics must be a dict of arrays, "
                        f"got {type(value).__name__}")
    return {key: np.asarray(leaf, np.float64) for key, leaf in value.items()}


def _mean_field(stats: Stats, out: Mapping[str, Any], key: str, value=None) -> None:
    value = out[key] if value is None else value
    stats[key] = _add(stats[key], value) if key in stats else _float64(value)
    stats[f"{key}_steps"] = stats.get(f"{key}_steps", 0) + 1


def add(stats: Stats, tasks: Sequence[Task], out: Mapping[str, Any]) -> Stats:
    """``stats`` with one step's host outputs folded in (a non-finite step is left out)."""
    out = jax.device_get(out)
    if not bool(out.get("finite", True)):
        return stats
    stats = dict(stats, steps=stats["steps"] + 1)
    for key in ("loss_sum", "loss_count"):
        stats[key] = _add(stats[key], out[key]) if key in stats else _float64(out[key])
    combined = dict(stats.get("stats", {}))
    for task in tasks:
        per_task = dict(combined.get(task.name, {}))
        for name in task.metrics:
            concat = metrics_lib.get_metric(name).reduce == "concat"
            batch = _metric_stats(out["stats"][task.name][name], task.name, name)
            if name in per_task:
                old = per_task[name]
                batch = {key: np.concatenate([np.asarray(old[key], np.float64), value]) if concat
                         else np.asarray(old[key], np.float64) + value for key, value in batch.items()}
            per_task[name] = batch
        combined[task.name] = per_task
    stats["stats"] = combined
    if "overflow" in out:  # a float16 run's dynamic loss scale: the losses and metrics count, the rest did not happen
        stats["overflow_steps"] = stats.get("overflow_steps", 0) + int(bool(out["overflow"]))
        if bool(out["overflow"]):
            return stats
    if "weights" in out:
        if "weights" in stats and "weights_present" not in stats:  # an older checkpoint's epoch so far
            stats["weights_present"] = np.full(np.shape(stats["weights"]), float(stats["weights_steps"]))
        present = (_float64(out["loss_count"]) > 0).astype(np.float64)
        stats["weights_present"] = _add(stats["weights_present"], present) if "weights_present" in stats else present
        _mean_field(stats, out, "weights")
    if "penalty" in out:
        _mean_field(stats, out, "penalty")
    if "gramian" in out:
        _mean_field(stats, out, "cosines", conflict.cosine_similarities(out["gramian"]))
        pairs = conflict.conflict_summary(out["gramian"])["conflicting_pairs"]
        stats["conflicting_pairs"] = stats.get("conflicting_pairs", 0.0) + float(pairs)
    if "solver_residual" in out:
        stats["solver_residual"] = max(stats.get("solver_residual", -np.inf), float(out["solver_residual"]))
    return stats


def fold(tasks: Sequence[Task], outputs: Sequence[Mapping[str, Any]], stats: Stats | None = None) -> Stats:
    for out in outputs:
        stats = add(init() if stats is None else stats, tasks, out)
    return init() if stats is None else stats


def summary(tasks: Sequence[Task], stats: Stats) -> dict[str, Any]:
    """The epoch's numbers ``{"<task>/loss", "<task>/<metric>", "<task>/weight", ...}``: exact
    epoch metrics (statistics combined before the final division or root), NaN without steps."""
    if not stats["steps"]:
        return {f"{t.name}/{name}": float("nan") for t in tasks for name in ("loss", *t.metrics)}
    result = {}
    loss_sum, loss_count = np.asarray(stats["loss_sum"]), np.asarray(stats["loss_count"])
    for i, task in enumerate(tasks):
        result[f"{task.name}/loss"] = float(loss_sum[i] / loss_count[i]) if loss_count[i] > 0 else float("nan")
        for name in task.metrics:
            combined = {key: np.asarray(value) for key, value in stats["stats"][task.name][name].items()}
            result[f"{task.name}/{name}"] = metrics_lib.get_metric(name).compute(combined)
    if "solver_residual" in stats:
        result["solver_residual"] = float(stats["solver_residual"])
    if "overflow_steps" in stats:
        result["overflow_steps"] = float(stats["overflow_steps"])
    if "weights" in stats:
        present = np.asarray(stats.get("weights_present", np.full(len(tasks), float(stats["weights_steps"]))))
        mean = np.where(present > 0, np.asarray(stats["weights"]) / np.maximum(present, 1.0), np.nan)
        result.update({f"{t.name}/weight": float(w) for t, w in zip(tasks, mean)})
    if "penalty" in stats:
        result["penalty"] = float(stats["penalty"]) / stats["penalty_steps"]
    if "cosines" in stats:
        result["gradient_cosines"] = (np.asarray(stats["cosines"]) / stats["cosines_steps"]).tolist()
        result["conflicting_pairs"] = stats["conflicting_pairs"] / stats["cosines_steps"]
    return result
