"""Inter-task affinity: how a step on one task changes every other task's loss (Fifty et al. 2021).

On a batch, with the shared parameters ``theta_s`` and task ``i``'s lookahead
``theta_s|i = theta_s - eta grad_{theta_s} L_i`` (task-specific parameters unchanged),

    Z_{i -> j} = 1 - L_j(theta_s|i) / L_j(theta_s).

``Z_{i -> j} > 0``: a step on task ``i`` lowers task ``j``'s loss (``i`` helps ``j``);
``< 0``: it hurts. The diagonal is each task's own progress. Averaged over training it is
the signal Task Affinity Grouping (TAG) uses to choose which tasks to train together.
Each measurement costs ``T`` gradient evaluations and ``T + 1`` forward passes, vmapped over
tasks (``tasks_at_once`` at a time, default all: memory is that many single-task backward
passes). Not a ``lax.map``: XLA's CPU backend runs a convolutional model's gradient ~35x
slower inside a loop body (9.9 s instead of 0.29 s for the seed CNN with five tasks,
``benchmarks/README.md``). The loop takes it every ``affinity_every_steps`` steps, on the
batch about to be trained on, in evaluation mode (no dropout). The lookahead is a plain gradient step of size ``eta`` (the paper's
definition), whatever the optimizer.

References: C. Fifty, E. Amid, Z. Zhao, T. Yu, R. Anil, C. Finn. "Efficiently Identifying
Task Groupings for Multi-Task Learning", NeurIPS 2021.
"""
from __future__ import annotations

import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mtl_jax.data.batching import select_inputs
from mtl_jax.models.contract import SHARED
from mtl_jax.tasks import Task, task_losses


@functools.lru_cache(maxsize=32)
def make_affinity_step(model: nn.Module, tasks: tuple[Task, ...], input_key="image",
                       tasks_at_once: int | None = None):
    """Returns the jitted ``affinity(params, batch, learning_rate) -> Z`` (``[T, T]``, row = the
    task stepped on, column = the task whose loss changes). ``tasks_at_once``: lookaheads
    vmapped together (default: all ``T``; fewer bounds memory, one vmapped group after another)."""
    if tasks_at_once is not None and tasks_at_once < 1:
        raise ValueError(f"tasks_at_once must be >= 1, got {tasks_at_once}")
    group = len(tasks) if tasks_at_once is None else min(tasks_at_once, len(tasks))
    if not hasattr(model, "param_owner"):
        raise TypeError("inter-task affinity needs a model that says which parameters are shared "
                        "(param_owner; see mtl_jax.models.sharing)")

    def affinity(params, batch, learning_rate):
        inputs = select_inputs(batch, input_key)
        shared = {k: v for k, v in params.items() if model.param_owner(k) == SHARED}

        def losses(shared_params):
            predictions = model.apply({"params": {**params, **shared_params}}, inputs, train=False)
            return task_losses(tasks, predictions, batch)[0]

        before = losses(shared)

        def lookahead(i):
            grads = jax.grad(lambda s: losses(s)[i])(shared)
            return losses(jax.tree.map(lambda p, g: p - learning_rate * g, shared, grads))

        after = jnp.concatenate([jax.vmap(lookahead)(jnp.arange(start, min(start + group, len(tasks))))
                                 for start in range(0, len(tasks), group)])
        return 1.0 - after / jnp.where(before > 0, before, 1.0)[None, :]

    return jax.jit(affinity)


def strongest_partners(matrix, tasks: Sequence[Task]) -> dict[str, dict]:
    """For every task ``j``: the other task whose step helps it most and the one that hurts it
    most (by ``Z_{i -> j}``). Empty for a single task."""
    matrix = np.asarray(matrix, np.float64)
    names = [t.name for t in tasks]
    out = {}
    for j, name in enumerate(names):
        others = [i for i in range(len(names)) if i != j]
        if not others:
            continue
        best = max(others, key=lambda i: matrix[i, j])
        worst = min(others, key=lambda i: matrix[i, j])
        out[name] = {"helped_most_by": names[best], "helped_by_affinity": float(matrix[best, j]),
                     "hurt_most_by": names[worst], "hurt_by_affinity": float(matrix[worst, j])}
    return out


def affinity_table(matrix, tasks: Sequence[Task], digits: int = 4) -> str:
    """A markdown table: row = the task stepped on, column = the task whose loss changes."""
    matrix = np.asarray(matrix, np.float64)
    names = [t.name for t in tasks]
    lines = ["| step on \\ effect on | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(names)]
    for i, name in enumerate(names):
        lines.append(f"| {name} | " + " | ".join(f"{v:+.{digits}f}" for v in matrix[i]) + " |")
    return "\n".join(lines)


class Affinities:
    """Running sums of affinity matrices, as a JSON-able dict kept in the checkpoint metadata
    (so a resumed run averages exactly as an uninterrupted one)."""

    @staticmethod
    def init(num_tasks: int) -> dict:
        zeros = np.zeros((num_tasks, num_tasks)).tolist()
        return {"sum": zeros, "count": 0, "epoch_sum": zeros, "epoch_count": 0}

    @staticmethod
    def add(running: dict, matrix) -> dict:
        matrix = np.asarray(matrix, np.float64)
        return {"sum": (np.asarray(running["sum"]) + matrix).tolist(), "count": running["count"] + 1,
                "epoch_sum": (np.asarray(running["epoch_sum"]) + matrix).tolist(),
                "epoch_count": running["epoch_count"] + 1}

    @staticmethod
    def epoch_mean(running: dict):
        """This epoch's mean matrix (a nested list), or None if none was measured."""
        if not running["epoch_count"]:
            return None
        return (np.asarray(running["epoch_sum"]) / running["epoch_count"]).tolist()

    @staticmethod
    def new_epoch(running: dict) -> dict:
        zeros = np.zeros_like(np.asarray(running["sum"])).tolist()
        return {**running, "epoch_sum": zeros, "epoch_count": 0}

    @staticmethod
    def mean(running: dict) -> np.ndarray:
        return np.asarray(running["sum"]) / max(running["count"], 1)

