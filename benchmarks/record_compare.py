"""Runs a shipped compare grid and records its table under ``benchmarks/results/``, with the exact
command, the date, the machine and the commit, so recorded results say where they came from.

    python benchmarks/record_compare.py experiments/configs/compare_correlated_tasks.py [--workdir DIR]

Writes ``benchmarks/results/<config name>.md``: a header, then the grid's ``results.md``. The
grid's workdir (default ``runs/<config name>``) keeps every run; running the script again
trains only what is not finished there (``mtl-jax compare`` caches finished runs).

A long grid can be recorded over several sittings and machines: every finished run's record
(its ``run.json`` and ``config.json``, a few KB; no checkpoints) is kept under
``benchmarks/results/<config name>.runs/``, which is committed. Before training, the records
there are copied into the workdir, so a fresh clone trains only the runs no one has finished;
``--keep-only`` copies the workdir's finished runs into the records and exits (run it before
committing a recording that is still under way).
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEPT = ("run.json", "config.json")  # what makes a run finished for ``mtl-jax compare``


def finished_runs(runs: Path) -> list[Path]:
    """The run folders under ``runs`` (``<cell>/seed<s>``, relative) holding a finished run."""
    return sorted(path.parent.relative_to(runs) for path in runs.glob("**/run.json")
                  if all((path.parent / name).exists() for name in KEPT))


def copy_runs(source: Path, target: Path) -> int:
    """Copies the finished runs under ``source`` that ``target`` lacks; returns how many."""
    import shutil

    copied = 0
    for folder in finished_runs(source):
        if (target / folder / "run.json").exists():
            continue
        (target / folder).mkdir(parents=True, exist_ok=True)
        for name in reversed(KEPT):  # run.json last: a half-copied run is not a finished one
            shutil.copyfile(source / folder / name, target / folder / name)
        copied += 1
    return copied


def machine() -> str:
    import jax

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    devices = ", ".join(sorted({d.device_kind for d in jax.devices()}))
    return f"{os.cpu_count()} cores ({cpu}), JAX {jax.__version__} on {jax.default_backend()} ({devices})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--workdir")
    parser.add_argument("--keep-only", action="store_true",
                        help="copy the workdir's finished runs into the kept records and exit")
    args = parser.parse_args()

    from mtl_jax import cpu

    cpu.enable_fast_convolutions()  # as the mtl-jax command does
    from mtl_jax.compare import compare

    name = Path(args.config).stem
    workdir = Path(args.workdir).resolve() if args.workdir else ROOT / "runs" / name
    shown = workdir.relative_to(ROOT) if workdir.resolve().is_relative_to(ROOT) else workdir
    command = f"mtl-jax compare --config {args.config} --workdir {shown}"
    records = ROOT / "benchmarks" / "results" / f"{name}.runs"
    if args.keep_only:
        print(f"kept {copy_runs(workdir / 'runs', records)} more finished runs in {records}", file=sys.stderr)
        return
    restored = copy_runs(records, workdir / "runs")
    if restored:
        print(f"{restored} finished runs restored from {records}", file=sys.stderr)
    start = time.perf_counter()
    try:
        compare(args.config, workdir, resume=True, progress=False)
    finally:  # an interrupted recording keeps what it finished
        copy_runs(workdir / "runs", records)
    minutes = (time.perf_counter() - start) / 60
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    header = (f"# `{name}`\n\n"
              f"- command: `{command}` (or `python benchmarks/record_compare.py {args.config}`)\n"
              f"- date: {datetime.date.today().isoformat()}, commit {commit or 'unknown'}\n"
              f"- machine: {machine()}\n"
              f"- wall time of this invocation: {minutes:.1f} min (runs already finished in the workdir are not "
              "retrained)\n\n")
    out = ROOT / "benchmarks" / "results" / f"{name}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(header + (workdir / "results.md").read_text())
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
