"""The seed example in float32, bfloat16 and float16 (mtl_jax/models/mixed_precision.py): test
metrics and time per step, in one process, as ratios to float32.

    python benchmarks/precision.py [--config experiments/configs/seed_cnn.py] [--seeds 0 1]
                                   [--set epochs=3 ...]

Each precision trains the config (the seed CNN on the embedded houses data by default: price
MSE + 0.5 x kind cross-entropy, Adam, 10 epochs) from the same seeds into a temporary workdir
and is scored on the test split. float16 uses ``--loss-scale`` (default 1: none; a number, or
``dynamic``: the run finds it, halving on overflow; the table then counts overflow steps). Prints a
markdown table: per precision, each reported test metric (mean over seeds), seconds per
train step (wall time of the whole run, compilation and evaluation included, over its steps)
and that time as a ratio to float32. On a CPU reduced precision is emulated and slower; the
accuracy columns are the point there. On a GPU or TPU the ratio is the speed-up.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "experiments/configs/seed_cnn.py"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--precisions", nargs="+", default=["float32", "bfloat16", "float16"])
    parser.add_argument("--loss-scale", type=lambda text: text if text == "dynamic" else float(text), default=1.0,
                        help="float16's loss scale: a number, or dynamic")
    parser.add_argument("--metrics", nargs="+", default=["price/rmse", "kind/accuracy"])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()

    from mtl_jax import cpu

    cpu.enable_fast_convolutions()  # as the mtl-jax command does
    import jax
    import numpy as np

    from mtl_jax.config import load_config
    from mtl_jax.experiment import train_and_evaluate

    rows = {}
    for precision in args.precisions:
        scores, seconds, overflows = [], [], []
        for seed in args.seeds:
            overrides = [*args.set, "tensorboard=False", "plots=False", f"seed={seed}", f"precision={precision}",
                         f"loss_scale={args.loss_scale if precision == 'float16' else 1.0}"]
            config = load_config(args.config, overrides)
            with tempfile.TemporaryDirectory() as workdir:
                start = time.perf_counter()
                results = train_and_evaluate(config, workdir, progress=False)
                seconds.append((time.perf_counter() - start) / results["steps"])
                history = json.loads((Path(workdir) / "history.json").read_text())
            overflows.append(sum(history.get("train/overflow_steps", [0])))
            scores.append(results["final"])
        rows[precision] = ({m: float(np.mean([s[m] for s in scores])) for m in args.metrics}, float(np.mean(seconds)),
                           float(np.mean(overflows)))

    base = rows.get("float32", next(iter(rows.values())))[1]
    print(f"{jax.devices()}; config {Path(args.config).name}, overrides {args.set}, seeds {args.seeds}")
    print("| precision | " + " | ".join(args.metrics) + " | s / step | / float32 | overflow steps |")
    print("|---" * (len(args.metrics) + 4) + "|")
    for precision, (metrics, per_step, overflow) in rows.items():
        scale = args.loss_scale if isinstance(args.loss_scale, str) else f"{args.loss_scale:g}"
        name = precision + (f" (loss scale {scale})" if precision == "float16" else "")
        print(f"| {name} | " + " | ".join(f"{metrics[m]:.4f}" for m in args.metrics)
              + f" | {per_step:.4f} | {per_step / base:.2f} | {overflow:g} |")


if __name__ == "__main__":
    main()
