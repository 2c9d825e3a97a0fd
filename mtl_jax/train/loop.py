"""Training, evaluation and prediction loops around the compiled steps.

``fit`` runs epochs of padded, per-epoch-shuffled batches through the train step,
evaluates on validation data after every epoch and returns the final state and a
history ``{"train/<task>/<metric>": [per epoch], "validation/...": [...],
"weight/<task>": [...], "epoch": [...]}``. Metrics are combined exactly over each
epoch from the steps' statistics (:mod:`mtl_jax.metrics`); the host collects them
once per epoch, so steps are dispatched without waiting on the device.
"""
from __future__ import annotations

import math
import sys
from typing import Any, Mapping, NamedTuple, Sequence

import flax.linen as nn
import jax
import numpy as np
import optax
from tqdm.auto import tqdm

from mtl_jax import checks
from mtl_jax import metrics as metrics_lib
from mtl_jax.data.batching import batches, num_examples, steps_per_epoch
from mtl_jax.tasks import Task, static_weights, task_outputs
from mtl_jax.train.state import TrainState, create_train_state
from mtl_jax.train.step import InputKey, make_eval_step, make_predict_step, make_train_step, select_inputs
from mtl_jax.weighting.base import Weighting
from mtl_jax.weighting.static import static

History = dict[str, list[float]]

# Module-level so repeated fit() calls without an explicit optimizer reuse the compiled step.
DEFAULT_OPTIMIZER = optax.adam(1e-3)


class FitResult(NamedTuple):
    state: TrainState
    history: History


def summarize(tasks: Sequence[Task], outputs: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Exact epoch metrics ``{"<task>/loss", "<task>/<metric>", ...}`` from per-step outputs."""
    outputs = jax.device_get(list(outputs))
    loss_sum = np.sum([o["loss_sum"] for o in outputs], axis=0)
    loss_count = np.sum([o["loss_count"] for o in outputs], axis=0)
    result = {}
    for i, task in enumerate(tasks):
        result[f"{task.name}/loss"] = float(loss_sum[i] / loss_count[i]) if loss_count[i] > 0 else float("nan")
        for name in task.metrics:
            metric = metrics_lib.get_metric(name)
            per_step = [o["stats"][task.name][name] for o in outputs]
            kinds = jax.tree.map(lambda _: metric.reduce, per_step[0])
            result[f"{task.name}/{name}"] = metric.compute(metrics_lib.combine(per_step, kinds))
    if "weights" in outputs[0]:
        weights = np.mean([o["weights"] for o in outputs], axis=0)
        result.update({f"{t.name}/weight": float(w) for t, w in zip(tasks, weights)})
    return result


def _show_progress(progress: bool | None) -> bool:
    return sys.stderr.isatty() if progress is None else progress


def fit(model: nn.Module, tasks: Sequence[Task], train: Mapping[str, np.ndarray], *,
        validation: Mapping[str, np.ndarray] | None = None, epochs: int = 10, batch_size: int = 64,
        optimizer: optax.GradientTransformation | None = None, weighting: Weighting | None = None,
        seed: int = 0, input_key: InputKey = "image", eval_batch_size: int | None = None,
        state: TrainState | None = None, progress: bool | None = None) -> FitResult:
    """Trains ``model`` on ``tasks`` for ``epochs`` epochs and returns ``(state, history)``.

    Args:
      train, validation: dicts of numpy arrays (inputs under ``input_key``, each task's target).
      optimizer: any optax optimizer; default ``optax.adam(1e-3)``.
      weighting: a :class:`~mtl_jax.weighting.base.Weighting`; default the tasks' static lambdas.
      seed: fixes initialisation, dropout and the shuffling of every epoch.
      state: continue from this state (its step counts on) instead of initialising. Its
        buffers are donated to the compiled step: use the returned state, not this one.

    Raises:
      ValueError / KeyError: bad data or tasks (before anything is compiled).
      FloatingPointError: a task's training loss became non-finite (names the tasks and epoch).
    """
    tasks = tuple(tasks)
    checks.check_tasks(model, tasks)
    checks.check_data(tasks, train, input_key, "train")
    if validation is not None:
        checks.check_data(tasks, validation, input_key, "validation")
    optimizer = optimizer or DEFAULT_OPTIMIZER
    weighting = weighting or static(tuple(static_weights(tasks).tolist()))
    first = next(batches(train, batch_size))
    if state is None:
        state = create_train_state(model, tasks, optimizer, weighting, select_inputs(first, input_key), seed)
    else:
        checks.check_input_shape(model, state.params, select_inputs(first, input_key), "train inputs")
    if validation is not None:
        checks.check_input_shape(model, state.params, select_inputs(validation, input_key), "validation inputs")
    train_step = make_train_step(model, tasks, optimizer, weighting, input_key)
    eval_step = make_eval_step(model, tasks, input_key)
    history: History = {"epoch": []}
    bar = tqdm(total=epochs * steps_per_epoch(train, batch_size), disable=not _show_progress(progress),
               unit="step", dynamic_ncols=True)
    for epoch in range(epochs):
        bar.set_description(f"epoch {epoch + 1}/{epochs}")
        outputs = []
        for batch in batches(train, batch_size, seed=seed, epoch=epoch):
            state, out = train_step(state, batch)
            outputs.append(out)
            bar.update()
        outputs = jax.device_get(outputs)
        loss_sums = np.sum([o["loss_sum"] for o in outputs], axis=0)
        bad = [t.name for t, total in zip(tasks, loss_sums) if not math.isfinite(total)]
        if bad:
            bar.close()
            raise FloatingPointError(f"non-finite training loss for task(s) {bad} in epoch {epoch + 1} "
                                     f"(step {int(state.step)}); lower the learning rate or check the targets")
        row = {f"train/{k}": v for k, v in summarize(tasks, outputs).items()}
        if validation is not None:
            row.update({f"validation/{k}": v for k, v in
                        _evaluate(eval_step, tasks, state.params, validation, eval_batch_size or batch_size).items()})
        history["epoch"].append(epoch + 1)
        for key, value in row.items():
            history.setdefault(key, []).append(value)
        bar.set_postfix({t.name: f"{row[f'train/{t.name}/loss']:.3g}" for t in tasks})
    bar.close()
    return FitResult(state, history)


def evaluate(model: nn.Module, tasks: Sequence[Task], params, data: Mapping[str, np.ndarray],
             batch_size: int = 256, input_key: InputKey = "image") -> dict[str, float]:
    """Exact metrics ``{"<task>/loss", "<task>/<metric>"}`` of ``params`` on ``data``."""
    tasks = tuple(tasks)
    checks.check_tasks(model, tasks)
    checks.check_data(tasks, data, input_key)
    checks.check_input_shape(model, params, select_inputs(data, input_key))
    return _evaluate(make_eval_step(model, tasks, input_key), tasks, params, data, batch_size)


def _evaluate(eval_step, tasks, params, data, batch_size):
    return summarize(tasks, [eval_step(params, batch) for batch in batches(data, batch_size)])


def predict(model: nn.Module, tasks: Sequence[Task], params, inputs, batch_size: int = 256) -> dict[str, Any]:
    """Per-task predictions for ``inputs`` (an array, or a dict for multi-input models).

    Returns ``{task: output}`` as described in :func:`mtl_jax.tasks.task_outputs`:
    values for regression, ``{"probabilities", "labels"}`` for classification kinds.
    """
    tasks = tuple(tasks)
    checks.check_tasks(model, tasks)
    arrays = inputs if isinstance(inputs, Mapping) else {"inputs": inputs}
    key = tuple(arrays) if isinstance(inputs, Mapping) else "inputs"
    checks.check_inputs(arrays, key, "predict")
    checks.check_input_shape(model, params, inputs)
    predict_step = make_predict_step(model)
    n = num_examples(arrays)
    raw = [jax.device_get(predict_step(params, select_inputs(batch, key))) for batch in batches(arrays, batch_size)]
    return {t.name: task_outputs(t, np.concatenate([r[t.name] for r in raw])[:n]) for t in tasks}
