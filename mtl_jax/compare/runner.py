"""``mtl-jax compare``: train every run of a grid (:mod:`mtl_jax.compare.grid`) into one workdir,
then write the results table (:mod:`mtl_jax.compare.report`).

Layout: ``<workdir>/runs/<cell>/seed<s>/`` is each run's own workdir (as ``mtl-jax train``
makes it, plus ``run.json``: its test metrics, steps and seconds, written last), and
``<workdir>/results.md``, ``results.csv``, ``runs.csv`` and ``delta_m.png`` the summary.

* Every run's config is built and checked before anything trains (a typo in the grid is named
  at once, not after hours).
* A finished run (``run.json``) is never trained again: running the command again only
  rewrites the summary. Its saved config must equal the grid's, else it is refused (the grid
  changed: use another workdir) instead of reporting stale numbers.
* A run that fails (a NaN loss, a solver error, a bad option) is recorded with its error in
  ``error.json`` and in the table; the rest of the grid goes on.
* An interrupted run (checkpoints but no ``run.json``) is continued with ``--resume`` from its
  latest checkpoint; without it the command stops and says so. ``--resume`` also retries the
  failed runs.
"""
from __future__ import annotations

import json
import time
import traceback
from pathlib import Path
from typing import Sequence

import ml_collections

from mtl_jax.compare.grid import Run, check_compare_config, compare_defaults, data_cells, resolve_base, runs
from mtl_jax.config import CONFIG_FILE, apply_overrides, config_changes, load_config, read_config
from mtl_jax.files import write_json
from mtl_jax.train.run_workdir import previous_run

RUN_FILE = "run.json"
ERROR_FILE = "error.json"


def load_compare_config(path: str | Path, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    """The compare config at ``path`` over :func:`~mtl_jax.compare.grid.compare_defaults`, checked."""
    loaded = load_config(path)
    config = compare_defaults()
    config.update(loaded)
    check_compare_config(config)
    return apply_overrides(config, overrides)


def training_config(base: Path, run: Run) -> ml_collections.ConfigDict:
    """The training config of one run: the base with the run's overrides (a baseline: one task)."""
    config = load_config(base, run.overrides)
    if run.only_task is not None:
        tasks = config.tasks.to_dict()
        if run.only_task not in tasks:
            raise KeyError(f"single-task baseline: the base config has no task {run.only_task!r}")
        config.tasks = {run.only_task: {**tasks[run.only_task], "weight": 1.0}}
        config.weighting_kwargs, config.aggregator_kwargs = {}, {}
        if config.best_metric and not config.best_metric.startswith(f"{run.only_task}/"):
            # the same criterion on the baseline's own task (plan() clears it if that task lacks the metric)
            config.best_metric = f"{run.only_task}/{config.best_metric.rsplit('/', 1)[-1]}"
    return config


def plan(path: str | Path, overrides: Sequence[str] = ()) -> tuple[ml_collections.ConfigDict, list[Run], dict, dict]:
    """The compare config, its runs, each run's checked training config and the metrics reported
    per data key (nothing trains)."""
    from mtl_jax.compare.report import reported_metrics
    from mtl_jax.experiment import check

    config = load_compare_config(path, overrides)
    base = resolve_base(path, config.base)
    tasks_of, keys_of = {}, {}
    for data_key, (_, data_overrides) in data_cells(config).items():
        _, tasks = check(load_config(base, [*config.overrides, *data_overrides]))
        tasks_of[data_key] = [task.name for task in tasks]
        keys_of[data_key] = reported_metrics(config, tasks)
    grid = runs(config, tasks_of)
    configs = {}
    for run in grid:
        try:
            configs[run] = training_config(base, run)
            _, tasks = check(configs[run])
            if run.only_task is not None and configs[run].best_metric:
                metric = configs[run].best_metric.rsplit("/", 1)[-1]
                if metric != "loss" and metric not in tasks[0].metrics:
                    configs[run].best_metric = ""
        except (KeyError, ValueError, TypeError, FileNotFoundError) as error:
            raise type(error)(f"run {run.folder}: {error.args[0] if error.args else error}") from None
    return config, grid, configs, keys_of


def compare(path: str | Path, workdir: str | Path, *, overrides: Sequence[str] = (), resume: bool = False,
            progress: bool | None = None, data_dir: str | Path | None = None) -> dict:
    """Trains every run of the compare config at ``path`` not yet finished in ``workdir`` and
    writes the summary; returns it (:func:`mtl_jax.compare.report.summarise_grid`)."""
    from mtl_jax.compare.report import summarise_grid, write_report
    from mtl_jax.experiment import train_and_evaluate

    config, grid, configs, keys_of = plan(path, overrides)
    workdir = Path(workdir)
    folders = {run: workdir / "runs" / run.folder for run in grid}
    for run, folder in folders.items():  # refuse before training anything
        if (folder / RUN_FILE).exists():
            changes = config_changes(read_config(folder), configs[run])
            if changes:
                raise FileExistsError(f"{folder} finished with another config ({'; '.join(changes[:3])}): the grid "
                                      "changed; use another --workdir (or delete that run's folder)")
        elif not resume and (previous_run(folder) or (folder / ERROR_FILE).exists()):
            raise FileExistsError(f"{folder} holds an unfinished or failed run; pass --resume to continue it")
    workdir.mkdir(parents=True, exist_ok=True)
    write_json(workdir / "compare.json", config.to_dict())
    for index, run in enumerate(grid):
        folder = folders[run]
        if (folder / RUN_FILE).exists():
            continue
        print(f"[{index + 1}/{len(grid)}] {run.folder}", flush=True)
        (folder / ERROR_FILE).unlink(missing_ok=True)
        start = time.perf_counter()
        try:
            results = train_and_evaluate(configs[run], folder, resume=resume and bool(previous_run(folder)),
                                         progress=progress, data_dir=data_dir)
        except Exception as error:  # noqa: BLE001 - a failed run is reported; the grid goes on
            folder.mkdir(parents=True, exist_ok=True)
            write_json(folder / ERROR_FILE, {"error": f"{type(error).__name__}: {error}",
                                             "traceback": traceback.format_exc()})
            print(f"  failed: {type(error).__name__}: {error}", flush=True)
            continue
        metrics = results.get("best") if config.checkpoint == "best" else results.get("final")
        write_json(folder / RUN_FILE, {"metrics": metrics or results.get("final"), "steps": results.get("steps"),
                                       "seconds": time.perf_counter() - start})
    summary = summarise_grid(grid, {run: _read(folders[run]) for run in grid}, keys_of)
    write_report(summary, workdir)
    return summary


def _read(folder: Path) -> dict:
    if (folder / RUN_FILE).exists():
        return json.loads((folder / RUN_FILE).read_text())
    if (folder / ERROR_FILE).exists():
        return {"error": json.loads((folder / ERROR_FILE).read_text())["error"]}
    return {"error": "not run"}


__all__ = ["compare", "plan", "load_compare_config", "training_config", "CONFIG_FILE"]
