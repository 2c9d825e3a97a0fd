"""What a task is: its target key, its kind, its head size, its loss, metrics and weight.

A :class:`Task` is plain, hashable data; everything it does is a pure function of
``(task, predictions, batch)``. The kind fixes how targets are read and which labels
count as missing:

=============== ===================== ============================ ===================
kind            prediction            target                       missing label
=============== ===================== ============================ ===================
regression      ``[B, d]``            float ``[B]`` or ``[B, d]``  NaN
classification  logits ``[B, C]``     int ``[B]`` in ``[0, C)``    ``-1``
binary          logit ``[B, 1]``      ``[B]`` in ``{0, 1}``        NaN or ``-1``
multilabel      logits ``[B, L]``     ``[B, L]`` in ``{0, 1}``     NaN or ``-1``
segmentation    logits ``[B,H,W,C]``  int ``[B, H, W]``            ``-1``
depth           ``[B, H, W, 1]``      float ``[B, H, W]``          NaN
=============== ===================== ============================ ===================

Besides these, an explicit mask ``batch["<target>_mask"]`` (1 = labelled, shape
``[B]`` or the target's shape) and the padding mask ``batch["_valid"]`` (see
:mod:`mtl_jax.data.batching`) switch elements off.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mtl_jax import losses as losses_lib
from mtl_jax import metrics as metrics_lib

EXAMPLE_MASK_KEY = "_valid"

_KINDS = ("regression", "classification", "binary", "multilabel", "segmentation", "depth")
_INTEGER_KINDS = ("classification", "segmentation")


@dataclasses.dataclass(frozen=True)
class Task:
    """One task of a multi-task problem.

    Attributes:
      name: the task's name; the model's head for it is called ``heads_<name>``.
      kind: one of ``regression, classification, binary, multilabel, segmentation, depth``.
      output_dim: the head's output size (values, classes, labels or channels).
      loss: a loss name from :data:`mtl_jax.losses.LOSSES` or ``fn(prediction, target)``.
      metrics: metric names from :data:`mtl_jax.metrics.METRICS`.
      weight: the static weight lambda of this task in ``sum_i lambda_i L_i``.
      target: the batch key holding the labels; defaults to ``name``.
    """

    name: str
    kind: str
    output_dim: int
    loss: str | Callable = "mse"
    metrics: tuple[str, ...] = ()
    weight: float = 1.0
    target: str | None = None

    def __post_init__(self):
        if self.kind not in _KINDS:
            raise ValueError(f"task {self.name!r}: unknown kind {self.kind!r}; expected one of {_KINDS}")
        if not self.name or not self.name.replace("_", "a").isalnum():
            raise ValueError(f"task name {self.name!r} must be a non-empty identifier (letters, digits, _)")
        if self.output_dim < 1:
            raise ValueError(f"task {self.name!r}: output_dim must be >= 1, got {self.output_dim}")
        if self.kind in _INTEGER_KINDS and self.output_dim < 2:
            raise ValueError(f"task {self.name!r}: a {self.kind} task needs >= 2 classes")
        object.__setattr__(self, "metrics", tuple(self.metrics))
        losses_lib.get_loss(self.loss)  # fail early on an unknown loss or metric name
        for metric in self.metrics:
            metrics_lib.get_metric(metric)

    @property
    def target_key(self) -> str:
        return self.target or self.name

    @property
    def mask_key(self) -> str:
        return f"{self.target_key}_mask"

    @property
    def dense(self) -> bool:
        """Whether the task predicts a map (one output per pixel)."""
        return self.kind in ("segmentation", "depth")

    @property
    def integer_labels(self) -> bool:
        return self.kind in _INTEGER_KINDS


def regression(name: str, dim: int = 1, *, loss: str | Callable = "mse", weight: float = 1.0,
               metrics: Sequence[str] = ("rmse", "mae", "r2"), target: str | None = None) -> Task:
    """A regression task with ``dim`` outputs (MSE, L1 or Huber; RMSE, MAE, R^2)."""
    return Task(name, "regression", dim, loss, tuple(metrics), weight, target)


def classification(name: str, num_classes: int, *, weight: float = 1.0,
                   metrics: Sequence[str] = ("accuracy", "macro_f1"), target: str | None = None) -> Task:
    """A single-label classification task (softmax cross-entropy on integer labels)."""
    return Task(name, "classification", num_classes, "softmax_cross_entropy", tuple(metrics), weight, target)


def binary(name: str, *, weight: float = 1.0, metrics: Sequence[str] = ("auc", "binary_accuracy", "log_loss"),
           target: str | None = None) -> Task:
    """A binary task with one logit (sigmoid binary cross-entropy; AUC)."""
    return Task(name, "binary", 1, "sigmoid_binary_cross_entropy", tuple(metrics), weight, target)


def multilabel(name: str, num_labels: int, *, weight: float = 1.0,
               metrics: Sequence[str] = ("multilabel_accuracy", "multilabel_f1"), target: str | None = None) -> Task:
    """A multilabel task: ``num_labels`` independent binary labels per example."""
    return Task(name, "multilabel", num_labels, "sigmoid_binary_cross_entropy", tuple(metrics), weight, target)


def segmentation(name: str, num_classes: int, *, weight: float = 1.0,
                 metrics: Sequence[str] = ("pixel_accuracy", "miou"), target: str | None = None) -> Task:
    """Per-pixel classification (cross-entropy over valid pixels; pixel accuracy, mIoU)."""
    return Task(name, "segmentation", num_classes, "softmax_cross_entropy", tuple(metrics), weight, target)


def depth(name: str, *, weight: float = 1.0, metrics: Sequence[str] = ("abs_err", "rel_err"),
          target: str | None = None) -> Task:
    """Per-pixel regression such as depth (L1 over valid pixels; absolute and relative error)."""
    return Task(name, "depth", 1, "l1", tuple(metrics), weight, target)


def static_weights(tasks: Sequence[Task]) -> jax.Array:
    """The tasks' lambdas as a ``[T]`` vector, in task order."""
    return jnp.asarray([t.weight for t in tasks], jnp.float32)


def _broadcast_mask(mask: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    mask = jnp.asarray(mask).astype(bool)
    return jnp.broadcast_to(mask.reshape(mask.shape + (1,) * (len(shape) - mask.ndim)), shape)


def prepare(task: Task, prediction: jax.Array, batch: Mapping[str, jax.Array]):
    """Aligns a prediction with its target and works out which elements are labelled.

    Returns ``(prediction, target, mask)`` where ``target`` holds a harmless value wherever
    ``mask`` is False, so losses, metrics and gradients stay finite on missing labels.
    """
    target = jnp.asarray(batch[task.target_key])
    if task.integer_labels:
        valid = target >= 0
        target = jnp.where(valid, target, 0).astype(jnp.int32)
    else:
        target = target.astype(jnp.float32)
        valid = jnp.isfinite(target)
        if task.kind in ("binary", "multilabel"):
            valid &= target >= 0
        target = jnp.where(valid, target, 0.0)
        if prediction.ndim == target.ndim + 1 and prediction.shape[-1] == 1:
            prediction = prediction[..., 0]
    mask = valid
    if task.mask_key in batch:
        mask &= _broadcast_mask(batch[task.mask_key], target.shape)
    if EXAMPLE_MASK_KEY in batch:
        mask &= _broadcast_mask(batch[EXAMPLE_MASK_KEY], target.shape)
    return prediction, target, mask


def loss_sum(task: Task, prediction: jax.Array, batch: Mapping[str, jax.Array]):
    """``(sum of the task's loss over labelled elements, their count)`` for one batch."""
    prediction, target, mask = prepare(task, prediction, batch)
    elementwise = losses_lib.get_loss(task.loss)(prediction.astype(jnp.float32), target)
    return losses_lib.masked_sum(elementwise, mask)


def task_losses(tasks: Sequence[Task], predictions: Mapping[str, jax.Array], batch: Mapping[str, jax.Array]):
    """Per-task mean losses ``[T]`` plus their ``(sums, counts)``, in task order.

    Task heads differ in shape and loss, so this is a trace-time loop over T tasks that
    compiles to T independent reductions.
    """
    sums, counts = zip(*(loss_sum(t, predictions[t.name], batch) for t in tasks))
    sums, counts = jnp.stack(sums), jnp.stack(counts)
    return losses_lib.safe_mean(sums, counts), sums, counts


def task_outputs(task: Task, raw):
    """A head's raw output as users want it (numpy in, numpy out).

    Regression and depth: the values (``[N]`` when one output, else ``[N, d]``; depth
    ``[N, H, W]``). Classification and segmentation: ``{"probabilities", "labels"}`` from
    the softmax. Binary and multilabel: ``{"probabilities", "labels"}`` from the sigmoid
    (threshold 0.5); binary probabilities have shape ``[N]``.
    """
    raw = np.asarray(raw, np.float32)
    if task.kind in ("regression", "depth"):
        return raw[..., 0] if raw.shape[-1] == 1 else raw
    if task.kind in ("classification", "segmentation"):
        shifted = np.exp(raw - raw.max(-1, keepdims=True))
        probabilities = shifted / shifted.sum(-1, keepdims=True)
        return {"probabilities": probabilities, "labels": probabilities.argmax(-1)}
    probabilities = 1.0 / (1.0 + np.exp(-raw))
    if task.kind == "binary":
        probabilities = probabilities[..., 0]
    return {"probabilities": probabilities, "labels": (probabilities > 0.5).astype(np.int32)}
