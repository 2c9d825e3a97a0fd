"""A comparison's grid: every cell (a combination of axis values) x seed, and the single-task
baselines it needs, from one compare config.

A compare config (``experiments/configs/compare_<name>.py``) is a Python file whose
``get_config()`` returns::

    config.base = "houses_mtl.py"          # a training config, relative to this file's folder
    config.overrides = ["data.train_size=300", "epochs=10"]   # applied to every run
    config.axes = {"method": {"ew": ["weighting=equal"], "uw": ["weighting=uw"]},
                   "architecture": {"hard": [], "mmoe": ["architecture=mmoe", "model=none"]}}
    config.seeds = [0, 1, 2]
    config.single_task = True              # train one model per task as the baselines of delta-m%
    config.baseline_axes = ["dataset"]     # axes that change the data: baselines per value of these
    config.metrics = []                    # "task/metric" to report (default: each task's first metric)
    config.checkpoint = "final"            # test metrics of the final state, or of the "best" checkpoint
    config.seeds_at_once = None            # a cell's seeds trained as one vmapped program, this many at
                                           # a time (0: all; 1: one by one, as mtl-jax train runs them;
                                           # None: all on a GPU/TPU, one by one on a CPU)

Each cell is the product of one value per axis (in the order the axes are written), each run
``seed=<s>`` of it. A single-task baseline trains the base config (with the overrides and those
of the ``baseline_axes``, the axes that change the data, such as a ``dataset`` or a
``train_size`` axis, but no other axis's) on one task alone, with weight 1, static weighting,
no aggregation and hard sharing: the same trunk, data and budget. Results are reported per
combination of the baseline axes' values, each against its own baselines.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import re
from pathlib import Path
from typing import Mapping, Sequence

import ml_collections

BASELINE = "single-task"
DATASET_AXIS = "dataset"
SINGLE_TASK_OVERRIDES = ("weighting=static", "aggregator=none", "architecture=hard", "log_losses=False")


@dataclasses.dataclass(frozen=True)
class Run:
    """One training run of the grid: a cell's values (or a baseline's task) and a seed."""

    cell: tuple[tuple[str, str], ...]  # ((axis, value), ...); a baseline: its data axes' values and ("task", t)
    seed: int
    overrides: tuple[str, ...]
    only_task: str | None = None  # a single-task baseline's task
    data_key: str = ""  # the values of the axes that change the data, joined: the table's section

    @property
    def group(self) -> str:
        """The cell's name in its section's table: its other axes' values (``uw / mmoe``), or
        ``single-task``."""
        if self.only_task is not None:
            return BASELINE
        data_values = self.data_key.split(" / ") if self.data_key else []
        values = [value for _, value in self.cell]
        for value in data_values:
            values.remove(value)
        return " / ".join(values) or "base"

    @property
    def dataset(self) -> str:
        return self.data_key

    @property
    def folder(self) -> str:
        parts = [f"{axis}={value}" for axis, value in self.cell]
        return _safe("_".join(parts) or "base") + f"/seed{self.seed}"


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9=_.-]+", "-", text)


def compare_defaults() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.base = ""
    config.overrides = []
    config.axes = {}
    config.seeds = [0]
    config.single_task = True
    config.baseline_axes = [DATASET_AXIS]
    config.metrics = []
    config.checkpoint = "final"
    config.seeds_at_once = None
    return config


def check_compare_config(config: ml_collections.ConfigDict) -> None:
    known = set(compare_defaults())
    unknown = sorted(set(config) - known)
    if unknown:
        raise KeyError(f"unknown compare config field(s) {unknown} (known: {sorted(known)})")
    if not config.base:
        raise ValueError("a compare config needs base: the training config every run starts from")
    if not list(config.seeds):
        raise ValueError("a compare config needs at least one seed")
    if len(set(config.seeds)) != len(list(config.seeds)):
        raise ValueError(f"seeds repeat: {list(config.seeds)}")
    unknown_axes = [axis for axis in config.baseline_axes if axis != DATASET_AXIS and axis not in dict(config.axes)]
    if unknown_axes:
        raise KeyError(f"baseline_axes {unknown_axes} are not axes of the grid ({sorted(dict(config.axes))})")
    at_once = config.seeds_at_once
    if at_once is not None and (not isinstance(at_once, int) or isinstance(at_once, bool) or at_once < 0):
        raise ValueError(f"seeds_at_once must be None (the device decides) or a whole number >= 0 (0: all seeds "
                         f"at once, 1: one by one), got {at_once!r}")
    if config.checkpoint not in ("final", "best"):
        raise ValueError(f"checkpoint must be 'final' or 'best', got {config.checkpoint!r}")
    for axis, values in dict(config.axes).items():
        if not values:
            raise ValueError(f"axis {axis!r} has no values")
        for value, overrides in dict(values).items():
            if isinstance(overrides, str) or not all(isinstance(o, str) and "=" in o for o in overrides):
                raise ValueError(f"axis {axis!r}, value {value!r}: give a list of 'key=value' overrides, "
                                 f"got {overrides!r}")


BASELINE_AGGREGATORS = ("mean", "sum")  # equal weighting, as the "equal" value already runs it
FEATURE_ONLY_AGGREGATORS = ("graddrop",)


def every_aggregator() -> dict[str, list[str]]:
    """A ``method`` axis of equal weighting and every registered gradient aggregator at both
    gradient levels (``"upgrad/feature"``, ``"upgrad/parameter"``, ...; per-coordinate ones at
    the feature level only), read from the shipped catalog (no JAX import)."""
    from mtl_jax.catalog import CATALOG_FILE

    names = sorted(json.loads(CATALOG_FILE.read_text())["aggregators"]["entries"])
    methods = {"equal": ["weighting=equal"]}
    for name in names:
        if name in BASELINE_AGGREGATORS:
            continue
        levels = ("feature",) if name in FEATURE_ONLY_AGGREGATORS else ("feature", "parameter")
        methods.update({f"{name}/{level}": [f"aggregator={name}", f"gradient_level={level}"] for level in levels})
    return methods


def seeds_at_once(config: ml_collections.ConfigDict) -> int:
    """How many seeds of a cell train as one program: None is all of them (0) on a GPU or
    TPU and one (1) on a CPU, where one vmapped program was measured slower than the runs one
    after another (benchmarks/seeds_speed.py: the CPU is busy with one run already, and a
    vmapped convolution becomes a grouped one)."""
    if config.seeds_at_once is not None:
        return config.seeds_at_once
    import jax

    return 1 if jax.default_backend() == "cpu" else 0


def data_axes(config: ml_collections.ConfigDict) -> list[str]:
    """The axes whose values change the data (``baseline_axes`` present in ``axes``)."""
    return [axis for axis in config.baseline_axes if axis in dict(config.axes)]


def data_cells(config: ml_collections.ConfigDict) -> dict[str, tuple[tuple[tuple[str, str], ...], tuple[str, ...]]]:
    """``{data_key: (((axis, value), ...), overrides)}`` for every combination of the data axes."""
    axes = {axis: dict(dict(config.axes)[axis]) for axis in data_axes(config)}
    out = {}
    for combination in itertools.product(*[list(values.items()) for values in axes.values()]):
        cell = tuple((axis, name) for axis, (name, _) in zip(axes, combination))
        out[" / ".join(name for _, name in cell)] = (cell, tuple(o for _, overrides in combination for o in overrides))
    return out


def runs(config: ml_collections.ConfigDict, tasks_of: Mapping[str, Sequence[str]]) -> list[Run]:
    """Every run of the grid: the cells x seeds, then the baselines (``tasks_of``: the tasks of
    each data key, :func:`data_cells`)."""
    axes = {axis: dict(values) for axis, values in dict(config.axes).items()}
    data = data_axes(config)
    common = tuple(config.overrides)
    out = []
    for combination in itertools.product(*[list(values.items()) for values in axes.values()]):
        cell = tuple((axis, name) for axis, (name, _) in zip(axes, combination))
        overrides = common + tuple(o for _, overrides in combination for o in overrides)
        data_key = " / ".join(name for axis, name in cell if axis in data)
        out += [Run(cell, seed, overrides + (f"seed={seed}",), data_key=data_key) for seed in config.seeds]
    if config.single_task:
        for data_key, (cell, data_overrides) in data_cells(config).items():
            for task in tasks_of[data_key]:
                overrides = common + data_overrides + SINGLE_TASK_OVERRIDES
                out += [Run(cell + (("task", task),), seed, overrides + (f"seed={seed}",), only_task=task,
                            data_key=data_key) for seed in config.seeds]
    return out


def resolve_base(compare_path: str | Path, base: str) -> Path:
    """The base training config: relative to the compare config's folder, else as given."""
    beside = Path(compare_path).resolve().parent / base
    return beside if beside.is_file() else Path(base)
