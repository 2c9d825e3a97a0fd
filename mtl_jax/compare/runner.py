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
* Seeds together: a cell's seeds train as one vmapped program
  (:mod:`mtl_jax.experiment_seeds`, ``seeds_at_once`` of them at a time; 0: all; None, the
  default: all on a GPU/TPU, one by one on a CPU), each into its
  own run folder as above, with the group's time shared equally in ``seconds``. A cell whose
  config cannot (per-step evaluation, affinity, ``task_sampling``) or a seed with a run to
  resume trains alone; a group that runs out of device memory is halved until it fits. A
  group interrupted before it finished trains again from the start (nothing of it is written
  before it ends).
* Several workers on one workdir: ``mtl-jax compare`` started N times on the same config and
  workdir (e.g. one per GPU: ``CUDA_VISIBLE_DEVICES=i``) share the grid. Each takes a run's
  lock before training it and passes by a run another worker holds or has finished, so every
  run trains once; each writes the tables when it ends (the last one's are complete; a run
  still training elsewhere is listed as not finished yet), and running the command again
  afterwards trains nothing and rewrites them.
* Several processes (``mtl-jax compare --coordinator ... --num-processes N --process-id I``,
  or ``--distributed``): every process runs the same grid in the same order and each run
  trains over all their devices, as ``mtl-jax train`` does (so seeds train one by one).
  Process 0 decides which runs are finished or refused, from its files, and alone writes
  ``run.json``, ``error.json`` and the summary; the summary returned on the other processes
  counts only the runs they can read.
"""
from __future__ import annotations

import contextlib
import json
import time
import traceback
from pathlib import Path
from typing import Sequence

import ml_collections

from mtl_jax.compare.grid import (Run, check_compare_config, compare_defaults, data_cells, resolve_base, runs,
                                  seeds_at_once)
from mtl_jax.config import CONFIG_FILE, apply_overrides, config_changes, load_config, read_config
from mtl_jax.distributed import as_process_0_sees
from mtl_jax.files import write_json
from mtl_jax.train.run_workdir import previous_run
from mtl_jax.train.workdir_lock import WorkdirInUse, in_use, workdir_lock

RUN_FILE = "run.json"
ERROR_FILE = "error.json"


def load_compare_config(path: str | Path, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    """The compare config at ``path`` over :func:`~mtl_jax.compare.grid.compare_defaults`, checked."""
    loaded = load_config(path)
    config = compare_defaults()
    config.update(loaded)
    check_compare_config(config)
    config = apply_overrides(config, overrides)
    check_compare_config(config)  # again: the overrides may have broken it
    return config


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

    config, grid, configs, keys_of = plan(path, overrides)
    workdir = Path(workdir)
    folders = {run: workdir / "runs" / run.folder for run in grid}
    # what is finished or refused, as process 0 sees it (with several processes its disk holds the files)
    states = as_process_0_sees([_state(folders[run], configs[run], resume) for run in grid])
    for run, state in zip(grid, states):  # refuse before training anything
        if state == _CHANGED:
            changes = (config_changes(read_config(folders[run]), configs[run]) if (folders[run] / RUN_FILE).exists()
                       else ["(seen by process 0)"])
            raise FileExistsError(f"{folders[run]} finished with another config ({'; '.join(changes[:3])}): the grid "
                                  "changed; use another --workdir (or delete that run's folder)")
        if state == _UNFINISHED:
            raise FileExistsError(f"{folders[run]} holds an unfinished or failed run; pass --resume to continue it")
    workdir.mkdir(parents=True, exist_ok=True)
    write_json(workdir / "compare.json", config.to_dict())
    todo = [run for run, state in zip(grid, states) if state != _FINISHED]
    done = len(grid) - len(todo)
    for group in _groups(todo, seeds_at_once(config), configs, folders):
        names = f"{group[0].folder}" if len(group) == 1 else (
            f"{group[0].folder.rsplit('/', 1)[0]}/seed{{{','.join(str(run.seed) for run in group)}}} (together)")
        print(f"[{done + 1}-{done + len(group)}/{len(grid)}] {names}" if len(group) > 1
              else f"[{done + 1}/{len(grid)}] {names}", flush=True)
        done += len(group)
        with _claimed(group, folders) as group:
            for run in group:
                (folders[run] / ERROR_FILE).unlink(missing_ok=True)
            if len(group) == 1:
                _train_one(group[0], configs, folders, config, resume, progress, data_dir)
            elif group:
                _train_together(group, configs, folders, config, progress, data_dir)
    summary = summarise_grid(grid, {run: _read(folders[run]) for run in grid}, keys_of)
    write_report(summary, workdir)
    return summary


_TODO, _FINISHED, _CHANGED, _UNFINISHED = range(4)


def _state(folder: Path, config: ml_collections.ConfigDict, resume: bool) -> int:
    """Whether the run in ``folder`` is to train, finished, or refused (finished with another
    config; unfinished or failed without ``resume``). A run another process is training is to
    train: :func:`_claimed` passes it by when its turn comes."""
    if (folder / RUN_FILE).exists():
        return _CHANGED if config_changes(read_config(folder), config) else _FINISHED
    if not resume and not in_use(folder) and (previous_run(folder) or (folder / ERROR_FILE).exists()):
        return _UNFINISHED
    return _TODO


@contextlib.contextmanager
def _claimed(group: list[Run], folders: dict):
    """The runs of ``group`` this process may train now, each run folder's lock held meanwhile:
    a run another process (another ``mtl-jax compare`` on this workdir) is training, or has
    finished since this one started, is passed by. With several processes, process 0 claims
    for all."""
    with contextlib.ExitStack() as stack:
        mine = []
        for run in group:
            try:
                stack.enter_context(workdir_lock(folders[run]))
            except WorkdirInUse:
                print(f"  {run.folder}: being trained by another process; passed by", flush=True)
                mine.append(0)
                continue
            finished = (folders[run] / RUN_FILE).exists()
            if finished:
                print(f"  {run.folder}: finished meanwhile by another process", flush=True)
            mine.append(0 if finished else 1)
        yield [run for run, claimed in zip(group, as_process_0_sees(mine)) if claimed]


def _groups(todo: list[Run], seeds_at_once: int, configs: dict, folders: dict) -> list[list[Run]]:
    """The runs to train, in grid order, as groups trained together: a cell's seeds (at most
    ``seeds_at_once``, 0: all) when its config allows it and no seed has a run to resume."""
    from mtl_jax.experiment_seeds import seeds_together

    groups: list[list[Run]] = []
    joinable = False  # whether the last group takes more runs
    for run in todo:
        alone = seeds_at_once == 1 or bool(seeds_together(configs[run])) or bool(previous_run(folders[run]))
        last = groups[-1] if groups else None
        if (joinable and not alone and (last[0].cell, last[0].only_task) == (run.cell, run.only_task)
                and (seeds_at_once == 0 or len(last) < seeds_at_once)):
            last.append(run)
        else:
            groups.append([run])
            joinable = not alone
    return groups


def _train_one(run: Run, configs: dict, folders: dict, config, resume: bool, progress, data_dir) -> None:
    from mtl_jax.experiment import train_and_evaluate

    folder, start = folders[run], time.perf_counter()
    try:
        results = train_and_evaluate(configs[run], folder, resume=resume and bool(previous_run(folder)),
                                     progress=progress, data_dir=data_dir)
    except Exception as error:  # noqa: BLE001 - a failed run is reported; the grid goes on
        _failed(folder, f"{type(error).__name__}: {error}", traceback.format_exc())
        return
    _finished(folder, results, config, time.perf_counter() - start)


def _train_together(group: list[Run], configs: dict, folders: dict, config, progress, data_dir) -> None:
    """The group's seeds as one vmapped program; a group that does not fit in memory is halved."""
    from mtl_jax.experiment_seeds import train_and_evaluate_seeds

    start = time.perf_counter()
    try:
        outcomes = train_and_evaluate_seeds([configs[run] for run in group], [folders[run] for run in group],
                                            progress=progress, data_dir=data_dir)
    except Exception as error:  # noqa: BLE001 - a failed group is reported; the grid goes on
        if _out_of_memory(error) and len(group) > 1:
            half = len(group) // 2
            print(f"  {len(group)} seeds at once ran out of memory: {half} and {len(group) - half} at once",
                  flush=True)
            for part in (group[:half], group[half:]):
                if len(part) > 1:
                    _train_together(part, configs, folders, config, progress, data_dir)
                else:
                    _train_one(part[0], configs, folders, config, False, progress, data_dir)
            return
        for run in group:
            _failed(folders[run], f"{type(error).__name__}: {error}", traceback.format_exc())
        return
    seconds = (time.perf_counter() - start) / len(group)  # the group's time, shared
    for run, outcome in zip(group, outcomes):
        if isinstance(outcome, str):
            _failed(folders[run], outcome, "")
        else:
            _finished(folders[run], outcome, config, seconds)


def _out_of_memory(error: BaseException) -> bool:
    return isinstance(error, MemoryError) or "RESOURCE_EXHAUSTED" in str(error) or "Out of memory" in str(error)


def _failed(folder: Path, error: str, trace: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / ERROR_FILE, {"error": error, "traceback": trace})
    print(f"  failed ({folder.name}): {error}", flush=True)


def _finished(folder: Path, results: dict, config, seconds: float) -> None:
    metrics = results.get("best") if config.checkpoint == "best" else results.get("final")
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / RUN_FILE, {"metrics": metrics or results.get("final"), "steps": results.get("steps"),
                                   "seconds": seconds, "seeds_at_once": results.get("seeds_at_once") or 1})


def _read(folder: Path) -> dict:
    if (folder / RUN_FILE).exists():
        return json.loads((folder / RUN_FILE).read_text())
    if in_use(folder):
        return {"error": "not finished yet: another process is training it (run the command again when it ends)"}
    if (folder / ERROR_FILE).exists():
        return {"error": json.loads((folder / ERROR_FILE).read_text())["error"]}
    return {"error": "not run"}


__all__ = ["compare", "plan", "load_compare_config", "training_config", "CONFIG_FILE"]
