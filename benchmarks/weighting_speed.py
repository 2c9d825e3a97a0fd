"""Step time of every loss-weighting method as a ratio to equal weighting (EW), in one run.

Setups: the seed CNN on 64x64x3 images (T = 2: price + kind, batch 64) and an MLP trunk
512-1024-1024-256 on 512-d inputs (batch 256) with T in {2, 8, 32} regression tasks.
Methods are timed round-robin, one waited-for step of each in turn (``--samples`` turns),
so drift on a noisy machine hits all of them alike; the table reports each method's
median step time divided by EW's (at T = 32 a step is ~20 ms: use >= 40 samples). It also checks that no step
recompiled after the first call (the jitted step's cache holds one program).

    python benchmarks/weighting_speed.py [--samples 40] [--quick]

Targets: <= 1.05x EW for every loss-only method, <= 1.3x for GradNorm and DB-MTL (issue 4).
Gradient aggregators at both levels: ``benchmarks/aggregation_speed.py``.
"""
from __future__ import annotations

import argparse
import statistics
import time

import jax
import numpy as np
import optax

import mtl_jax as mtl
from mtl_jax import cpu
from mtl_jax.data.batching import batches
from mtl_jax.experiment import make_weighting
from mtl_jax.models import MLP, SeedCNN, hard_sharing
from mtl_jax.registry import WEIGHTINGS
from mtl_jax.train import create_train_state, make_train_step

cpu.enable_fast_convolutions()  # before JAX starts, as the mtl-jax command does

METHODS = [name for name, _ in WEIGHTINGS.describe() if name != "static"] + ["log_equal"]


def setups(quick: bool):
    rng = np.random.default_rng(0)
    tasks = (mtl.regression("price"), mtl.classification("kind", 3, weight=0.5))
    images = {"image": rng.integers(0, 255, (64, 64, 64, 3), dtype=np.uint8),
              "price": rng.normal(size=64).astype(np.float32), "kind": rng.integers(0, 3, 64).astype(np.int32)}
    yield "seed CNN, T=2", hard_sharing(SeedCNN(), tasks, head_hidden=(64,)), tasks, images, "image"
    for num_tasks in (2, 8) if quick else (2, 8, 32):
        tasks = tuple(mtl.regression(f"t{i}") for i in range(num_tasks))
        data = {"x": rng.normal(size=(256, 512)).astype(np.float32),
                **{t.name: rng.normal(size=256).astype(np.float32) for t in tasks}}
        yield f"MLP 512-1024-1024-256, T={num_tasks}", hard_sharing(MLP((1024, 1024, 256)), tasks), tasks, data, "x"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=40, help="timed steps per method and setup")
    parser.add_argument("--quick", action="store_true", help="fewer setups and samples (a smoke run)")
    args = parser.parse_args()
    samples = 4 if args.quick else args.samples
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; median of {samples} interleaved steps per method")
    for title, model, tasks, data, input_key in setups(args.quick):
        batch = next(batches(data, len(next(iter(data.values())))))
        optimizer = optax.adam(1e-3)
        runs = {}
        for name in METHODS:
            base, log = ("equal", True) if name == "log_equal" else (name, False)
            weighting = make_weighting(base, tasks, {}, steps_per_epoch=50, log=log)
            step = make_train_step(model, tasks, optimizer, weighting, input_key)
            state = create_train_state(model, tasks, optimizer, weighting, batch[input_key][:2])
            state, out = step(state, batch)  # compile
            jax.block_until_ready(out)
            runs[name] = [step, state, []]
        for _ in range(samples):  # one step of every method in turn: drift hits all alike
            for run in runs.values():
                step, state, times = run
                start = time.perf_counter()
                state, out = step(state, batch)
                jax.block_until_ready(out)
                times.append(time.perf_counter() - start)
                run[1] = state
        medians = {name: statistics.median(run[2]) for name, run in runs.items()}
        print(f"\n{title}: EW step {1e3 * medians['equal']:.1f} ms")
        for name, run in runs.items():
            compiled = run[0]._cache_size()
            print(f"  {name:<12} {medians[name] / medians['equal']:5.2f}x EW   compiled programs: {compiled}"
                  + ("" if compiled == 1 else "  <- RECOMPILED"))


if __name__ == "__main__":
    main()
