"""Metrics that accumulate exactly over batches, and delta-m%.

A metric is three pieces: ``stats(task, prediction, target, mask)`` runs on device inside
the compiled step and returns *sufficient statistics* of one batch (sums, a confusion
matrix, or per-example scores); ``reduce`` says how batches combine (``"sum"`` or
``"concat"``); ``compute(stats)`` turns the combined statistics into the number on the
host. Because batches combine before the final division or square root, an epoch's
RMSE is the RMSE of the epoch, not a mean of batch RMSEs, whatever the batch sizes,
padding and missing labels.

Definitions (over labelled elements only):
  rmse ``sqrt(mean (y_hat - y)^2)``; mae ``mean |y_hat - y|``; r2 ``1 - SSE / SST``;
  accuracy; macro_f1 (mean F1 over classes seen in labels or predictions);
  auc (binary ROC AUC, exact Mann-Whitney statistic with ties counted one half);
  binary_accuracy (threshold 0.5); log_loss (mean binary cross-entropy);
  multilabel_accuracy (fraction of correct label entries, i.e. 1 - Hamming loss);
  multilabel_f1 (micro F1 over all label entries); pixel_accuracy; miou (mean IoU over
  classes present in labels or predictions); abs_err ``mean |d_hat - d|``;
  rel_err ``mean |d_hat - d| / |d|``.
"""
from __future__ import annotations

from typing import Callable, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax


class Metric(NamedTuple):
    stats: Callable  # (task, prediction, target, mask) -> pytree of arrays, on device
    compute: Callable  # combined stats (numpy) -> float, on host
    higher_is_better: bool
    reduce: str = "sum"  # how batch statistics combine: "sum" or "concat"


def _f(mask):
    return mask.astype(jnp.float32)


def _sum(x, mask):
    return jnp.sum(jnp.where(mask, x, 0.0))


def _labels(task, prediction):
    """Predicted class (classification, segmentation) or 0/1 labels (binary, multilabel)."""
    if task.kind in ("binary", "multilabel"):
        return (prediction > 0).astype(jnp.int32)
    return jnp.argmax(prediction, axis=-1).astype(jnp.int32)


def _confusion(task, prediction, target, mask):
    c = task.output_dim
    predicted = jax.nn.one_hot(_labels(task, prediction).reshape(-1), c) * _f(mask).reshape(-1, 1)
    return {"confusion": jax.nn.one_hot(target.reshape(-1), c).T @ predicted}


def _error_sums(kind):
    def stats(task, prediction, target, mask):
        err = prediction - target
        value = {"squared": err**2, "absolute": jnp.abs(err),
                 "relative": jnp.abs(err) / jnp.maximum(jnp.abs(target), 1e-8)}[kind]
        return {"sum": _sum(value, mask), "count": jnp.sum(_f(mask))}
    return stats


def _ratio(stats):
    return float(stats["sum"] / stats["count"]) if stats["count"] > 0 else float("nan")


def _r2_stats(task, prediction, target, mask):
    return {"sse": _sum((prediction - target) ** 2, mask), "sum_y": _sum(target, mask),
            "sum_y2": _sum(target**2, mask), "count": jnp.sum(_f(mask))}


def _r2(s):
    if s["count"] == 0:
        return float("nan")
    sst = s["sum_y2"] - s["sum_y"] ** 2 / s["count"]
    return float(1.0 - s["sse"] / sst) if sst > 0 else float("nan")


def _correct_stats(task, prediction, target, mask):
    correct = (_labels(task, prediction) == target).astype(jnp.float32)
    return {"sum": _sum(correct, mask), "count": jnp.sum(_f(mask))}


def _log_loss_stats(task, prediction, target, mask):
    return {"sum": _sum(optax.sigmoid_binary_cross_entropy(prediction, target), mask),
            "count": jnp.sum(_f(mask))}


def _present_classes(confusion):
    return (confusion.sum(0) + confusion.sum(1)) > 0


def _macro_f1(s):
    m = np.asarray(s["confusion"], np.float64)
    tp, present = np.diag(m), _present_classes(m)
    if not present.any():
        return float("nan")
    f1 = 2 * tp / np.maximum(m.sum(0) + m.sum(1), 1e-12)
    return float(f1[present].mean())


def _miou(s):
    m = np.asarray(s["confusion"], np.float64)
    tp, present = np.diag(m), _present_classes(m)
    if not present.any():
        return float("nan")
    iou = tp / np.maximum(m.sum(0) + m.sum(1) - tp, 1e-12)
    return float(iou[present].mean())


def _micro_f1_stats(task, prediction, target, mask):
    predicted = _labels(task, prediction).astype(jnp.float32)
    return {"tp": _sum(predicted * target, mask), "fp": _sum(predicted * (1 - target), mask),
            "fn": _sum((1 - predicted) * target, mask)}


def _micro_f1(s):
    denominator = 2 * s["tp"] + s["fp"] + s["fn"]
    return float(2 * s["tp"] / denominator) if denominator > 0 else float("nan")


def _scores_stats(task, prediction, target, mask):
    return {"score": prediction, "label": target, "mask": mask}


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Exact ROC AUC: P(score of a positive > score of a negative), ties counted 1/2."""
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels) > 0.5
    n_pos, n_neg = labels.sum(), (~labels).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores))
    # average 1-based rank within each group of tied scores
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    ends = np.r_[starts[1:], len(scores)]
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _auc(s):
    mask = np.asarray(s["mask"], bool)
    return roc_auc(np.asarray(s["score"])[mask], np.asarray(s["label"])[mask])


METRICS: dict[str, Metric] = {
    "rmse": Metric(_error_sums("squared"), lambda s: float(np.sqrt(_ratio(s))), False),
    "mae": Metric(_error_sums("absolute"), _ratio, False),
    "r2": Metric(_r2_stats, _r2, True),
    "accuracy": Metric(_correct_stats, _ratio, True),
    "macro_f1": Metric(_confusion, _macro_f1, True),
    "auc": Metric(_scores_stats, _auc, True, "concat"),
    "binary_accuracy": Metric(_correct_stats, _ratio, True),
    "log_loss": Metric(_log_loss_stats, _ratio, False),
    "multilabel_accuracy": Metric(_correct_stats, _ratio, True),
    "multilabel_f1": Metric(_micro_f1_stats, _micro_f1, True),
    "pixel_accuracy": Metric(_correct_stats, _ratio, True),
    "miou": Metric(_confusion, _miou, True),
    "abs_err": Metric(_error_sums("absolute"), _ratio, False),
    "rel_err": Metric(_error_sums("relative"), _ratio, False),
}


def get_metric(name: str) -> Metric:
    try:
        return METRICS[name]
    except KeyError:
        raise ValueError(f"unknown metric {name!r}; known metrics: {sorted(METRICS)}") from None


def higher_is_better(key: str) -> bool:
    """Direction of a ``"task/metric"`` key (``loss`` is lower-is-better)."""
    name = key.rsplit("/", 1)[-1]
    return False if name == "loss" else get_metric(name).higher_is_better


def combine(batch_stats: Sequence, reduce_kinds) -> object:
    """Combines a list of per-batch statistics (already on host) into epoch statistics."""
    def merge(kind, *leaves):
        return np.concatenate(leaves, axis=0) if kind == "concat" else np.sum(np.stack(leaves), axis=0)
    return jax.tree.map(merge, reduce_kinds, *batch_stats)


def delta_m(results: Mapping[str, float], baselines: Mapping[str, float],
            higher: Mapping[str, bool] | None = None, per_task: bool = False) -> float:
    """Delta-m%: the average relative improvement over single-task baselines.

    ``delta_m = 100 / K * sum_k (-1)^{l_k} (M_k - B_k) / B_k`` over the K metrics named in
    ``baselines`` (keys ``"task/metric"``), where ``l_k = 1`` if lower is better for metric
    k, so a positive value means the multi-task model is better (Maninis, Radosavovic &
    Kokkinos, "Attentive single-tasking of multiple tasks", CVPR 2019; Vandenhende et
    al., TPAMI 2021). By default every metric counts once (the mean over all metrics);
    with ``per_task=True`` the relative changes are first averaged within each task and
    then over tasks, as LibMTL reports it. ``higher`` overrides directions per key.
    """
    if not baselines:
        raise ValueError("delta_m needs at least one baseline metric")
    missing = sorted(set(baselines) - set(results))
    if missing:
        raise KeyError(f"delta_m: results lack baseline metrics {missing}")
    changes: dict[str, list[float]] = {}
    for key, base in baselines.items():
        if base == 0:
            raise ValueError(f"delta_m: baseline {key} is 0; relative change is undefined")
        up = (higher or {}).get(key, None)
        sign = 1.0 if (higher_is_better(key) if up is None else up) else -1.0
        group = key.rsplit("/", 1)[0] if per_task else key
        changes.setdefault(group, []).append(sign * (results[key] - base) / abs(base))
    return 100.0 * float(np.mean([np.mean(v) for v in changes.values()]))
