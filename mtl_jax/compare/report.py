"""The comparison's summary: per-group test metrics over seeds, delta-m% against the single-task
baselines, average ranks, timings; written as ``results.md``, ``results.csv``, ``runs.csv`` and
``delta_m.png``.

delta-m% (:func:`mtl_jax.metrics.delta_m`, every reported metric counted once):
``100 / K * sum_k (-1)^{l_k} (M_k - B_k) / B_k`` with ``B_k`` the single-task baselines' metric
averaged over their seeds and ``M_k`` one seed's result, so each seed of a group gives one
delta-m% and the table shows their mean, std and 95 % interval. Positive: better than training
each task alone. The single-task row's own delta-m% (its seeds against their mean) shows the
seed noise around 0.
"""
from __future__ import annotations

import csv
import dataclasses
import math
from pathlib import Path
from typing import Mapping, Sequence

from mtl_jax.compare.grid import BASELINE, Run
from mtl_jax.compare.intervals import Summary, average_ranks, summarise
from mtl_jax.files import atomic_write
from mtl_jax.metrics import delta_m, higher_is_better

DELTA = "delta_m%"


@dataclasses.dataclass
class Group:
    name: str
    dataset: str
    metrics: dict[str, Summary]
    delta_m: Summary | None
    rank: float
    seconds_per_step: float
    total_seconds: float
    seeds: list[int]
    failed: dict[int, str]
    within_noise: dict[str, bool]  # per metric (and delta-m%): its interval overlaps the best group's


def reported_metrics(config, tasks) -> list[str]:
    """``task/metric`` keys reported for a section: the compare config's ``metrics``, else each
    task's first metric."""
    if list(config.metrics):
        return list(config.metrics)
    return [f"{task.name}/{task.metrics[0]}" for task in tasks if task.metrics]


def summarise_grid(grid: Sequence[Run], results: Mapping[Run, dict], keys_of: Mapping[str, Sequence[str]]) -> dict:
    """``{"datasets": {data_key: [Group, ...]}, "failed": [(folder, error)], "runs": [...]}``
    (``keys_of``: the metrics reported per data key)."""
    by_group: dict[tuple[str, str], list[Run]] = {}
    for run in grid:
        by_group.setdefault((run.dataset, run.group), []).append(run)
    baselines = _baselines(grid, results, keys_of)
    out = {"datasets": {}, "failed": [], "runs": []}
    for run in grid:
        entry = results[run]
        out["runs"].append({"group": run.group, "dataset": run.dataset, "seed": run.seed, "folder": run.folder,
                            "task": run.only_task or "", **(entry.get("metrics") or {}),
                            "seconds": entry.get("seconds"), "steps": entry.get("steps"),
                            "error": entry.get("error", "")})
        if "error" in entry:
            out["failed"].append((run.folder, entry["error"]))
    for (dataset, name), members in by_group.items():
        keys = keys_of[dataset]
        per_seed = _per_seed(members, results, keys)
        failed = {run.seed: results[run]["error"] for run in members if "error" in results[run]}
        metrics = {}
        for key in keys:
            column = [values.get(key, math.nan) for values in per_seed.values()]
            if column and all(math.isfinite(v) for v in column):  # a non-finite test metric shows as "-"
                metrics[key] = summarise(column)
        base = baselines.get(dataset)
        deltas = None
        if base and per_seed and all(set(base) <= set(values) for values in per_seed.values()):
            try:
                deltas = summarise([delta_m(values, base) for values in per_seed.values()])
            except ValueError:  # a baseline of 0 (relative change undefined) or a non-finite metric
                deltas = None
        timed = [results[r] for r in members if "error" not in results[r] and results[r].get("steps")]
        seconds_per_step = (sum(r["seconds"] for r in timed) / sum(r["steps"] for r in timed)
                            if timed else math.nan)
        total = sum(results[r].get("seconds") or 0.0 for r in members)
        out["datasets"].setdefault(dataset, []).append(Group(name, dataset, metrics, deltas, math.nan,
                                                             seconds_per_step, total, sorted(per_seed), failed, {}))
    for groups in out["datasets"].values():
        _rank_and_mark(groups, keys_of[groups[0].dataset])
    return out


def _per_seed(members: Sequence[Run], results: Mapping[Run, dict], keys: Sequence[str]) -> dict[int, dict]:
    """``{seed: {key: value}}`` of a group's finished seeds (a baseline group joins its tasks' runs
    of one seed into one result; a seed with a failed task is left out)."""
    seeds: dict[int, dict] = {}
    failed = set()
    for run in members:
        entry = results[run]
        if "error" in entry:
            failed.add(run.seed)
            continue
        values = entry.get("metrics") or {}
        own = [k for k in keys if k.split("/")[0] == run.only_task] if run.only_task else keys
        seeds.setdefault(run.seed, {}).update({k: float(values[k]) for k in own if k in values})
    return {seed: values for seed, values in seeds.items() if seed not in failed}


def _baselines(grid, results, keys_of) -> dict[str, dict[str, float]]:
    """Per dataset, each reported metric's single-task value averaged over seeds."""
    out = {}
    for dataset, keys in keys_of.items():
        members = [r for r in grid if r.only_task is not None and r.dataset == dataset]
        per_seed = _per_seed(members, results, keys)
        if members and per_seed and all(all(k in v for k in keys) for v in per_seed.values()):
            out[dataset] = {k: sum(v[k] for v in per_seed.values()) / len(per_seed) for k in keys}
    return out


def _rank_and_mark(groups: list[Group], keys: Sequence[str]) -> None:
    means = {g.name: {k: s.mean for k, s in g.metrics.items()} for g in groups}
    ranks = average_ranks(means, {k: higher_is_better(k) for k in keys})
    for group in groups:
        group.rank = ranks.get(group.name, math.nan)
    columns = {key: (lambda g, k=key: g.metrics.get(k), higher_is_better(key)) for key in keys}
    columns[DELTA] = (lambda g: g.delta_m, True)
    for key, (get, higher) in columns.items():
        present = [g for g in groups if get(g) is not None]
        if not present:
            continue
        best = max(present, key=lambda g: get(g).mean if higher else -get(g).mean)
        for group in present:
            group.within_noise[key] = group is not best and get(group).overlaps(get(best))
        best.within_noise[key] = False


def write_report(summary: dict, workdir: Path) -> None:
    """``results.md``, ``results.csv``, ``runs.csv`` and ``delta_m.png`` in ``workdir`` (each atomically)."""
    workdir = Path(workdir)
    _write_markdown(summary, workdir / "results.md")
    _write_csv(summary, workdir / "results.csv")
    with atomic_write(workdir / "runs.csv") as file:
        columns = sorted({k for row in summary["runs"] for k in row}, key=lambda k: (k not in (
            "dataset", "group", "task", "seed", "folder"), k))
        writer = csv.DictWriter(file, fieldnames=columns)
        writer.writeheader()
        writer.writerows(summary["runs"])
    _plot(summary, workdir / "delta_m.png")


def _cell(summary: Summary | None, within: bool, digits: int = 3) -> str:
    if summary is None:
        return "-"
    return summary.text(digits) + (" ≈" if within else "")


def _write_markdown(summary: dict, path: Path) -> None:
    lines = ["# Comparison", "",
             "Test metrics over seeds: mean ± std [95 % interval] (Student's t). delta-m% = 100/K · Σ_k "
             "±(M_k − B_k)/B_k over the K metrics shown, against the single-task baselines averaged over their "
             "seeds (+: better than training each task alone; `mtl_jax.metrics.delta_m`). ≈: the interval "
             "overlaps the best one's in that column (within noise). Rank: mean over the metrics shown (1 = best).",
             ""]
    for dataset, groups in summary["datasets"].items():
        keys = list(dict.fromkeys(k for g in groups for k in g.metrics))
        if dataset:
            lines += [f"## {dataset}", ""]
        header = ["method", *keys, DELTA, "rank", "s/step", "total s", "seeds"]
        lines += ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
        for g in sorted(groups, key=lambda g: (g.rank if not math.isnan(g.rank) else math.inf)):
            seeds = f"{len(g.seeds)}" + (f" ({len(g.failed)} failed)" if g.failed else "")
            lines.append("| " + " | ".join([
                f"**{g.name}**" if BASELINE in g.name else g.name,
                *[_cell(g.metrics.get(k), g.within_noise.get(k, False)) for k in keys],
                _cell(g.delta_m, g.within_noise.get(DELTA, False), 2),
                f"{g.rank:.2f}", f"{g.seconds_per_step:.4f}", f"{g.total_seconds:.0f}", seeds]) + " |")
        lines.append("")
    if summary["failed"]:
        lines += ["## Failed runs", ""] + [f"- `{folder}`: {error}" for folder, error in summary["failed"]] + [""]
    with atomic_write(path) as file:
        file.write("\n".join(lines))


def _write_csv(summary: dict, path: Path) -> None:
    rows = []
    for dataset, groups in summary["datasets"].items():
        for g in groups:
            items = [*g.metrics.items(), *([(DELTA, g.delta_m)] if g.delta_m else [])]
            for key, s in items:
                rows.append({"dataset": dataset, "group": g.name, "metric": key, "mean": s.mean, "std": s.std,
                             "ci95_low": s.low, "ci95_high": s.high, "seeds": s.count,
                             "within_noise_of_best": g.within_noise.get(key, False), "rank": g.rank,
                             "seconds_per_step": g.seconds_per_step, "total_seconds": g.total_seconds,
                             "failed_seeds": len(g.failed)})
    with atomic_write(path) as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]) if rows else ["dataset", "group", "metric"])
        writer.writeheader()
        writer.writerows(rows)


def _plot(summary: dict, path: Path) -> None:
    import numpy as np

    from mtl_jax.train.plots import _save, plt

    panels = [(d, [g for g in groups if g.delta_m is not None]) for d, groups in summary["datasets"].items()]
    panels = [(d, groups) for d, groups in panels if groups]
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(max(4.0, 0.6 * max(len(g) for _, g in panels) + 2.0)
                                                      * len(panels), 3.8), squeeze=False)
    for ax, (dataset, groups) in zip(axes[0], panels):
        groups = sorted(groups, key=lambda g: -g.delta_m.mean)
        means = np.array([g.delta_m.mean for g in groups])
        low = np.array([g.delta_m.low if g.delta_m.count > 1 else g.delta_m.mean for g in groups])
        high = np.array([g.delta_m.high if g.delta_m.count > 1 else g.delta_m.mean for g in groups])
        ax.errorbar(range(len(groups)), means, yerr=[means - low, high - means], fmt="o", capsize=3)
        ax.axhline(0.0, color="grey", linewidth=0.8)
        ax.set_xticks(range(len(groups)), [g.name for g in groups], rotation=45, ha="right", fontsize=8)
        ax.set_ylabel("delta-m % (95 % interval)")
        ax.set_title(dataset or "delta-m % vs single-task", fontsize=10)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, path)
