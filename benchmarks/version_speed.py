"""Train-step time of this checkout against an older commit, both timed in one process.

Across processes this machine's step times drift by 5-20%, more than most changes being
measured; two versions in one process, timed round-robin, see the same drift. The older
commit's ``mtl_jax`` is extracted with ``git archive`` into a temporary folder and renamed
``mtl_jax_old`` (imports rewritten; its TFDS builders unregistered so both can load).

    python benchmarks/version_speed.py --old 57b8ead [--tasks 8,32] [--samples 10]

Setup as ``aggregation_speed.py``'s MLP: 512-1024-1024-256 on 512-d inputs, batch 256, T
regression tasks, Adam, equal weighting followed by the aggregator, built by each version's
``experiment.make_weighting``. Prints each method's median step time per version, the ratio
new/old, and each version's ratio to its own EW step.
"""
from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS = (("none", "feature"), ("upgrad", "feature"), ("mgda", "feature"), ("cagrad", "feature"),
           ("pcgrad", "feature"), ("nash_mtl", "feature"), ("upgrad", "parameter"))


def extract(commit: str, into: Path) -> None:
    """``mtl_jax`` at ``commit`` as the package ``mtl_jax_old`` under ``into``."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "mtl_jax"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    (into / "mtl_jax").rename(into / "mtl_jax_old")
    for path in (into / "mtl_jax_old").rglob("*.py"):
        text = re.sub(r"\bmtl_jax\b", "mtl_jax_old", path.read_text())
        text = re.sub(r"^class (\w+)\(GeneratedBuilder\):", r"class \1(GeneratedBuilder, skip_registration=True):",
                      text, flags=re.M)
        path.write_text(text)


def step_runner(pkg, make_weighting, num_tasks: int, aggregator: str, level: str):
    import jax
    import numpy as np
    import optax

    tasks = tuple(pkg.regression(f"t{i}") for i in range(num_tasks))
    rng = np.random.default_rng(0)
    data = {"x": rng.normal(size=(256, 512)).astype(np.float32),
            **{t.name: rng.normal(size=256).astype(np.float32) for t in tasks}}
    batch = next(pkg.data.batching.batches(data, 256))
    model = pkg.models.hard_sharing(pkg.models.MLP((1024, 1024, 256)), tasks)
    weighting = make_weighting("equal", tasks, {}, steps_per_epoch=50, aggregator=aggregator, level=level)
    optimizer = optax.adam(1e-3)
    step = pkg.train.make_train_step(model, tasks, optimizer, weighting, "x")
    holder = {"state": pkg.train.create_train_state(model, tasks, optimizer, weighting, batch["x"][:2])}

    def run(steps: int = 5):
        for _ in range(steps):
            holder["state"], out = step(holder["state"], batch)
        jax.block_until_ready(out)
    run()
    run()
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", required=True, help="the older commit (any git revision)")
    parser.add_argument("--tasks", default="8,32", help="comma-separated task counts")
    parser.add_argument("--samples", type=int, default=10, help="timed blocks of 5 steps per method and version")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        extract(args.old, Path(folder))
        sys.path.insert(0, folder)
        from mtl_jax import cpu

        cpu.enable_fast_convolutions()
        import numpy as np

        import mtl_jax
        import mtl_jax_old
        from mtl_jax.experiment import make_weighting
        from mtl_jax_old.experiment import make_weighting as old_make_weighting

        versions = {"old": (mtl_jax_old, old_make_weighting), "new": (mtl_jax, make_weighting)}
        for num_tasks in (int(t) for t in args.tasks.split(",")):
            runs = {(version, *method): step_runner(pkg, make, num_tasks, *method)
                    for method in METHODS for version, (pkg, make) in versions.items()}
            times = {key: [] for key in runs}
            order = np.random.default_rng(1)
            for _ in range(args.samples):
                for index in order.permutation(len(runs)):
                    key = list(runs)[index]
                    time.sleep(0.05)
                    start = time.perf_counter()
                    runs[key]()
                    times[key].append((time.perf_counter() - start) / 5)
            median = {key: statistics.median(t) for key, t in times.items()}
            print(f"T={num_tasks}, old = {args.old}: median of {args.samples} blocks")
            print("  method     level      old ms  new ms  new/old  old/EW  new/EW")
            for method, level in METHODS:
                old, new = median[("old", method, level)], median[("new", method, level)]
                print(f"  {method:<10} {level:<9} {1e3 * old:7.1f} {1e3 * new:7.1f}   {new / old:5.2f}   "
                      f"{old / median[('old', 'none', 'feature')]:5.2f}   {new / median[('new', 'none', 'feature')]:5.2f}",
                      flush=True)


if __name__ == "__main__":
    main()
