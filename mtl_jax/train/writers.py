"""Metric writers: one JSON line per logged step in ``metrics.jsonl``, and TensorBoard events.

Every row is ``{"step": s, "<name>": value, ...}`` with names such as ``train/price/loss``,
``validation/kind/accuracy``, ``train/price/weight``. Rows are flushed before any
checkpoint is saved, so after an interruption the log holds at least every row up to the
checkpoint; :meth:`MetricWriter.resume_at` then drops the rows past the checkpoint
(rewriting the file atomically) and tells TensorBoard to purge its later events, so a
resumed run's logs equal an uninterrupted run's.
"""
from __future__ import annotations

import io
import json
import math
import os
from pathlib import Path
from typing import Mapping

from mtl_jax.distributed import writes_files
from mtl_jax.files import atomic_write

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


def read_rows(path: str | Path) -> list[dict]:
    """The rows of a ``metrics.jsonl`` (a torn last line from a killed process is skipped)."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


class MetricWriter:
    """Writes rows to ``<workdir>/metrics.jsonl`` and, when ``tensorboard``, to event files."""

    def __init__(self, workdir: str | Path, tensorboard: bool = True, resume_step: int | None = None):
        self.path = Path(workdir) / METRICS_FILE
        self._tb = None
        if not writes_files():  # another process than process 0 of a multi-process run: writes nothing
            self._file = io.StringIO()
            return
        if resume_step is None:
            if self.path.exists():
                self.path.unlink()
        else:
            self._truncate(resume_step)
        self._file = open(self.path, "a")
        if tensorboard:
            from tensorboardX import SummaryWriter

            purge = None if resume_step is None else resume_step + 1
            self._tb = SummaryWriter(str(Path(workdir) / TENSORBOARD_DIR), purge_step=purge, flush_secs=30)

    def _truncate(self, step: int) -> None:
        rows = [row for row in read_rows(self.path) if row.get("step", 0) <= step]
        with atomic_write(self.path) as file:
            file.write("".join(json.dumps(row) + "\n" for row in rows))

    def write(self, step: int, values: Mapping[str, float]) -> None:
        row = {"step": int(step), **{k: float(v) for k, v in values.items()}}
        self._file.write(json.dumps(row) + "\n")
        if self._tb is not None:
            for name, value in values.items():
                if math.isfinite(float(value)):
                    self._tb.add_scalar(name, float(value), int(step))

    def flush(self) -> None:
        self._file.flush()
        if not isinstance(self._file, io.StringIO):
            os.fsync(self._file.fileno())
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if self._file.closed:
            return
        self.flush()
        self._file.close()
        if self._tb is not None:
            self._tb.close()
