"""Summaries over seeds: mean, standard deviation and a 95 % confidence interval, overlap, ranks.

With ``n`` seeds, the interval is ``mean +- t_{0.975, n-1} * s / sqrt(n)`` (Student's t, ``s``
the sample standard deviation, ddof = 1): the interval that covers the true mean of the
seed distribution 95 % of the time when the per-seed results are roughly normal. One seed has
no interval (reported as such, never as +- 0). Two methods whose intervals overlap are
"within noise" of each other: the table says so instead of ranking them as different.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Sequence

import numpy as np

# Student's t quantile t_{0.975, df} for df = 1..30; beyond, the normal's 1.96 is within 2 %.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)


def t975(df: int) -> float:
    if df < 1:
        raise ValueError("a confidence interval needs at least two seeds")
    return _T975[df - 1] if df <= len(_T975) else 1.96


@dataclasses.dataclass(frozen=True)
class Summary:
    mean: float
    std: float  # sample std (ddof 1); nan for one value
    low: float  # 95 % interval; nan for one value
    high: float
    count: int

    def overlaps(self, other: "Summary") -> bool:
        """Whether the two 95 % intervals overlap (with one seed: whether the means are equal)."""
        if self.count < 2 or other.count < 2:
            return self.mean == other.mean
        return self.low <= other.high and other.low <= self.high

    def text(self, digits: int = 3) -> str:
        if self.count < 2:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def summarise(values: Sequence[float]) -> Summary:
    """Mean, sample std and 95 % interval of per-seed values (NaN values are refused: a failed
    seed is reported as failed, not averaged away)."""
    values = np.asarray(values, np.float64)
    if values.size == 0:
        raise ValueError("no values to summarise")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"non-finite values {values.tolist()}")
    mean = float(values.mean())
    if values.size < 2:
        return Summary(mean, math.nan, math.nan, math.nan, 1)
    std = float(values.std(ddof=1))
    half = t975(values.size - 1) * std / math.sqrt(values.size)
    return Summary(mean, std, mean - half, mean + half, int(values.size))


def average_ranks(means: Mapping[str, Mapping[str, float]], higher: Mapping[str, bool]) -> dict[str, float]:
    """``{group: rank averaged over metrics}``: per metric, 1 is the best group (ties share the
    mean of their ranks); ``means[group][metric]``, ``higher[metric]``: whether larger is better."""
    groups = list(means)
    metrics = sorted({m for values in means.values() for m in values})
    ranks = {group: [] for group in groups}
    for metric in metrics:
        present = [g for g in groups if metric in means[g]]
        scores = np.array([means[g][metric] * (-1.0 if higher[metric] else 1.0) for g in present])
        order = scores.argsort(kind="stable")
        position = np.empty(len(present))
        position[order] = np.arange(1, len(present) + 1)
        for value in np.unique(scores):  # ties: the mean of their positions
            tied = scores == value
            position[tied] = position[tied].mean()
        for group, rank in zip(present, position):
            ranks[group].append(float(rank))
    return {group: float(np.mean(r)) if r else math.nan for group, r in ranks.items()}
