"""Data-parallel training on 1 and on N simulated CPU devices (``mesh={"data": -1}``): samples per
second and the largest parameter difference, each device count in its own process.

    python benchmarks/mesh_speed.py [--devices 1 8] [--fsdp 4] [--train 1024] [--epochs 2] [--batch 64]
                                    [--model seed_cnn|mlp] [--aggregator upgrad]

A correctness run, not a speed claim: N simulated devices share the same CPU cores
(``XLA_FLAGS=--xla_force_host_platform_device_count=N``), so more devices cannot be faster
here; what it shows is that the same run on N devices trains the same parameters (float
rounding only) and what the partitioning costs. On a machine with several GPUs run it with
``--devices 1 <count>`` and ``--real`` (no simulated devices) for the speed-up.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

WORKER = """
import json, sys, time
from mtl_jax import cpu
cpu.enable_fast_convolutions()
import jax, numpy as np
import mtl_jax as mtl
from mtl_jax.data import load_houses
from mtl_jax.experiment import make_weighting
from mtl_jax.models import MLP, SeedCNN, hard_sharing
from mtl_jax.train.mesh import make_mesh

args = json.loads(sys.argv[1])
data = load_houses(train_size=args["train"], validation_size=64, test_size=16, seed=0)
tasks = (mtl.regression("price"), mtl.classification("kind", 3, weight=0.5))
model = hard_sharing(SeedCNN() if args["model"] == "seed_cnn" else MLP((256, 256)), tasks)
steps = args["train"] // args["batch"]
weighting = make_weighting("equal", tasks, {}, steps_per_epoch=steps, aggregator=args["aggregator"] or "none",
                           level="feature")
spec = {"data": args["devices"] // args["fsdp"], "fsdp": args["fsdp"]} if args["devices"] > 1 else {"data": 1}
mesh = make_mesh(spec)
options = dict(batch_size=args["batch"], weighting=weighting, progress=False, mesh=mesh,
               fsdp_min_size=args["fsdp_min_size"])
mtl.fit(model, tasks, data["train"], epochs=1, **options)  # compiles
start = time.perf_counter()
result = mtl.fit(model, tasks, data["train"], epochs=args["epochs"], **options)
jax.block_until_ready(result.state.params)
seconds = time.perf_counter() - start
np.savez(args["out"], *[np.asarray(leaf) for leaf in jax.tree.leaves(result.state.params)])
print(json.dumps({"devices": jax.device_count(), "samples_per_s": args["epochs"] * steps * args["batch"] / seconds}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--train", type=int, default=1024)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--model", choices=["seed_cnn", "mlp"], default="seed_cnn")
    parser.add_argument("--aggregator", default="upgrad", help="a gradient aggregator at the feature level, or ''")
    parser.add_argument("--fsdp", type=int, default=1, help="devices of the fsdp axis (parameters split over them)")
    parser.add_argument("--fsdp-min-size", type=int, default=4096, help="arrays with fewer elements stay replicated")
    parser.add_argument("--real", action="store_true", help="use the devices JAX sees (no simulated CPU devices)")
    args = parser.parse_args()

    import numpy as np

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for count in args.devices:
            env = dict(os.environ)
            if not args.real:
                env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={count}").strip()
            job = {**vars(args), "devices": count, "out": f"{tmp}/{count}.npz"}
            done = subprocess.run([sys.executable, "-c", WORKER, json.dumps(job)], env=env, cwd=ROOT,
                                  capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(f"{count} devices failed:\n{done.stderr[-3000:]}")
            report = json.loads(done.stdout.strip().splitlines()[-1])
            params = np.load(job["out"])
            rows.append((count, report["samples_per_s"], [params[k] for k in sorted(params, key=lambda k: int(k[4:]))]))
    base_rate, base_params = rows[0][1], rows[0][2]
    print(f"{args.model}, train {args.train}, {args.epochs} epochs, batch {args.batch}, "
          f"aggregator {args.aggregator or 'none'} (feature level); {'real' if args.real else 'simulated CPU'} devices"
          + (f"; fsdp axis {args.fsdp} (arrays of >= {args.fsdp_min_size} elements split)" if args.fsdp > 1 else ""))
    print("| devices | samples / s | / 1 device | max param diff vs first |")
    print("|---|---|---|---|")
    for count, rate, params in rows:
        diff = max(float(np.max(np.abs(a - b))) for a, b in zip(params, base_params))
        print(f"| {count} | {rate:.0f} | {rate / base_rate:.2f} | {diff:.1e} |")


if __name__ == "__main__":
    main()
