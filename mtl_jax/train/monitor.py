"""Tracking a validation metric: the best value so far and early stopping.

A :class:`Monitor` watches one key such as ``"validation/price/rmse"``; its direction comes
from the metric (``loss``, RMSE, ... lower is better; accuracy, AUC, ... higher). A value
improves on the best when it beats it by more than ``min_delta``. Early stopping ends
training after ``patience`` evaluations in a row without improvement (``patience=0``
disables it). The bookkeeping is a small dict kept in the checkpoint's metadata, so a
resumed run stops exactly where an uninterrupted one would.
"""
from __future__ import annotations

import dataclasses
import math

from mtl_jax.metrics import higher_is_better


def validation_key(metric: str) -> str:
    """``"price/rmse"`` or ``"validation/price/rmse"`` -> ``"validation/price/rmse"``."""
    parts = metric.split("/")
    if parts[0] == "validation":
        parts = parts[1:]
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"a monitored metric is '<task>/<metric>' (e.g. 'price/rmse'), got {metric!r}")
    return "validation/" + "/".join(parts)


@dataclasses.dataclass(frozen=True)
class Monitor:
    metric: str
    patience: int = 0
    min_delta: float = 0.0

    def __post_init__(self):
        object.__setattr__(self, "metric", validation_key(self.metric))
        if self.patience < 0 or self.min_delta < 0:
            raise ValueError(f"patience and min_delta must be >= 0, got {self.patience}, {self.min_delta}")

    @property
    def higher_is_better(self) -> bool:
        return higher_is_better(self.metric)

    @staticmethod
    def init() -> dict:
        return {"best_value": None, "best_step": None, "bad_evaluations": 0}

    def update(self, record: dict, value: float, step: int) -> tuple[dict, bool]:
        """Returns the new record and whether ``value`` is a new best."""
        best = record["best_value"]
        sign = 1.0 if self.higher_is_better else -1.0
        improved = math.isfinite(value) and (best is None or sign * (value - best) > self.min_delta)
        if improved:
            return {"best_value": float(value), "best_step": int(step), "bad_evaluations": 0}, True
        return {**record, "bad_evaluations": record["bad_evaluations"] + 1}, False

    def should_stop(self, record: dict) -> bool:
        return self.patience > 0 and record["bad_evaluations"] >= self.patience
