"""Task-gradient cosine similarities and conflicting pairs, from the step's Gramian.

With ``G_ij = <g_i, g_j>`` (at the feature or parameter level), the cosine similarity is
``C_ij = G_ij / sqrt(G_ii G_jj)`` and a pair of tasks *conflicts* when ``C_ij < 0``: a step
along one gradient increases the other task's loss (to first order). Yu et al. 2020
(PCGrad) relate conflict with large differences in gradient norms and high curvature to
poor multi-task optimisation; tracking ``C`` over training shows which pairs fight and when.
Tasks with a zero gradient have cosine 0 with every other task.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from mtl_jax.tasks import Task

PAIRS_LOGGED_UP_TO = 8  # tasks; beyond that only the summary scalars are logged per step


def cosine_similarities(gramian) -> np.ndarray:
    """``C = D^-1 G D^-1`` with ``D = diag(sqrt(G_ii))`` (0 where a gradient is zero)."""
    gramian = np.asarray(gramian, np.float64)
    norms = np.sqrt(np.maximum(np.diagonal(gramian), 0.0))
    inverse = np.where(norms > 0, 1.0 / np.where(norms > 0, norms, 1.0), 0.0)
    cosines = gramian * inverse[:, None] * inverse[None, :]
    np.fill_diagonal(cosines, np.where(norms > 0, 1.0, 0.0))
    return np.clip(cosines, -1.0, 1.0)


def conflict_summary(gramian) -> dict[str, float]:
    """``conflicting_pairs`` (count of ``i < j`` with ``C_ij < 0``), ``conflict_fraction`` and
    ``mean_cosine`` over pairs (a single task has no pairs: 0)."""
    cosines = cosine_similarities(gramian)
    upper = cosines[np.triu_indices(cosines.shape[0], k=1)]
    if upper.size == 0:
        return {"conflicting_pairs": 0.0, "conflict_fraction": 0.0, "mean_cosine": 0.0}
    conflicts = float(np.sum(upper < 0))
    return {"conflicting_pairs": conflicts, "conflict_fraction": conflicts / upper.size,
            "mean_cosine": float(np.mean(upper))}


def step_row(tasks: Sequence[Task], gramian) -> dict[str, float]:
    """Scalars to log for one step: the summary, each task's gradient norm, and each pair's
    cosine when there are at most :data:`PAIRS_LOGGED_UP_TO` tasks."""
    row = {f"train/gradient/{k}": v for k, v in conflict_summary(gramian).items()}
    gramian = np.asarray(gramian, np.float64)
    row.update({f"train/gradient/norm/{t.name}": float(np.sqrt(max(gramian[i, i], 0.0))) for i, t in enumerate(tasks)})
    if len(tasks) <= PAIRS_LOGGED_UP_TO:
        cosines = cosine_similarities(gramian)
        for i, a in enumerate(tasks):
            for j in range(i + 1, len(tasks)):
                row[f"train/gradient/cos/{a.name}|{tasks[j].name}"] = float(cosines[i, j])
    return row


def epoch_summary(gramians: Sequence) -> dict:
    """The mean cosine matrix over an epoch's steps (a nested list) and the mean number of
    conflicting pairs per step."""
    cosines = [cosine_similarities(g) for g in gramians]
    return {"gradient_cosines": np.mean(cosines, axis=0).tolist(),
            "conflicting_pairs": float(np.mean([conflict_summary(g)["conflicting_pairs"] for g in gramians]))}
