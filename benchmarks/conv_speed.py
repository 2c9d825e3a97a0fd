"""Seed CNN training step on CPU: XLA's layers vs mtl_jax's CPU paths vs PyTorch eager, in one run.

Variants: ``SeedCNN(conv="native")`` (XLA's convolution and ``nn.max_pool``), ``"auto"`` (the
default: on CPU the fast max pool, and XLA's convolution when mtl_jax.cpu.enable_fast_convolutions() made it
multi-threaded, else mtl_jax's), ``"fast"`` (mtl_jax's convolution and pooling regardless).
Run with ``MTL_JAX_KEEP_XLA_FLAGS=1`` to see the single-threaded YNNPACK convolutions. The step: batch 64 of 64x64x3 images, conv3x3(32)-ReLU-maxpool2, conv3x3(64)-ReLU-maxpool2,
flatten, heads price (64 hidden, 1 output, MSE) and kind (64 hidden, 3 classes, CE),
total ``mse + 0.5 ce``, Adam. Variants are timed round-robin in a shuffled order, one
waited-for step each in turn, and the table gives medians and ratios. PyTorch is timed when importable (it is
never a dependency of mtl_jax; use a separate venv, see benchmarks/README.md).

    python benchmarks/conv_speed.py [--samples 30] [--profile]

``--profile`` also traces five steps of the default (``conv="auto"``) path with ``jax.profiler``
and prints the XLA operations that took the most time, each with the model operation behind it.
"""
from __future__ import annotations

import argparse
import collections
import gzip
import json
import re
import statistics
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
import optax

import mtl_jax as mtl
from mtl_jax import cpu
from mtl_jax.data.batching import batches
from mtl_jax.models import SeedCNN, hard_sharing
from mtl_jax.train import create_train_state, make_train_step
from mtl_jax.weighting import static

cpu.enable_fast_convolutions()  # before JAX starts, as the mtl-jax command does

BATCH = 64


def jax_step(conv: str, batch, with_compiled: bool = False):
    tasks = (mtl.regression("price"), mtl.classification("kind", 3, weight=0.5))
    model = hard_sharing(SeedCNN(conv=conv), tasks, head_hidden=(64,))
    optimizer, weighting = optax.adam(1e-3), static([1.0, 0.5])
    step = make_train_step(model, tasks, optimizer, weighting, "image")
    state = create_train_state(model, tasks, optimizer, weighting, batch["image"][:2])
    holder = {"state": state}

    def run():
        holder["state"], out = step(holder["state"], batch)
        jax.block_until_ready(out)
    if with_compiled:
        return run, step.lower(state, batch).compile().as_text()
    return run


def profile(batch, steps: int = 5, top: int = 20) -> None:
    """The default path's costliest XLA operations per step, named by the model operation behind each."""
    run, hlo = jax_step("auto", batch, with_compiled=True)
    run()
    origin = dict(re.findall(r'%([\w.\-]+) = .*?op_name="([^"]+)"', hlo))
    with tempfile.TemporaryDirectory() as folder:
        with jax.profiler.trace(folder, create_perfetto_trace=True):
            for _ in range(steps):
                run()
        trace = next(Path(folder).rglob("*.trace.json.gz"))
        events = json.load(gzip.open(trace))["traceEvents"]
    spent = collections.Counter()
    for event in events:
        if event.get("ph") == "X" and event.get("name") in origin:
            spent[event["name"]] += event["dur"]
    print(f"auto (default) path, costliest XLA operations (ms per step, {steps} traced steps):")
    for name, micros in spent.most_common(top):
        where = origin[name].replace("jit(train_step)/", "").replace("MultiTaskModel.", "")
        print(f"  {micros / steps / 1e3:6.2f}  {name:<32} {where[:90]}")


def torch_step(batch):
    import torch
    from torch import nn

    torch.manual_seed(0)
    trunk = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten())
    price = nn.Sequential(nn.Linear(16 * 16 * 64, 64), nn.ReLU(), nn.Linear(64, 1))
    kind = nn.Sequential(nn.Linear(16 * 16 * 64, 64), nn.ReLU(), nn.Linear(64, 3))
    params = [*trunk.parameters(), *price.parameters(), *kind.parameters()]
    optimizer = torch.optim.Adam(params, lr=1e-3)
    images = torch.from_numpy(batch["image"]).permute(0, 3, 1, 2).float().div(255.0).contiguous()
    target_price = torch.from_numpy(batch["price"])
    target_kind = torch.from_numpy(batch["kind"]).long()

    def run():
        optimizer.zero_grad(set_to_none=True)
        z = trunk(images)
        loss = nn.functional.mse_loss(price(z)[:, 0], target_price) + \
            0.5 * nn.functional.cross_entropy(kind(z), target_kind)
        loss.backward()
        optimizer.step()
    return run, torch.__version__


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--pause", type=float, default=0.1,
                        help="seconds idle before each timed step (libgomp and Eigen workers spin after a step)")
    parser.add_argument("--profile", action="store_true", help="also print the fast path's costliest XLA ops")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    data = {"image": rng.integers(0, 255, (BATCH, 64, 64, 3), dtype=np.uint8),
            "price": rng.normal(size=BATCH).astype(np.float32),
            "kind": rng.integers(0, 3, BATCH).astype(np.int32)}
    batch = next(batches(data, BATCH))
    variants = {"jax, XLA conv": jax_step("native", batch), "jax, auto (default)": jax_step("auto", batch),
                "jax, mtl_jax conv": jax_step("fast", batch)}
    try:
        run, version = torch_step(data)
        variants[f"torch {version} eager"] = run
    except ImportError:
        print("(torch not importable here: PyTorch column skipped)")
    times = {name: [] for name in variants}
    for run in variants.values():  # warm up: compile, first allocations
        run()
        run()
    order = np.random.default_rng(1)
    for _ in range(args.samples):  # a fresh order each round: no variant always follows the same one
        for name in order.permutation(list(variants)):
            run = variants[name]
            time.sleep(args.pause)  # let the previous variant's spinning worker threads go idle
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(t) for name, t in times.items()}
    reference = next((n for n in medians if n.startswith("torch")), "jax, XLA conv")
    threads = "multi-threaded" if cpu.fast_convolutions_enabled() else "YNNPACK (one thread)"
    print(f"jax {jax.__version__}, {jax.devices()[0].platform}, XLA CPU convolutions: {threads}; "
          f"median of {args.samples} interleaved steps")
    for name, median in medians.items():
        print(f"  {name:<24} {1e3 * median:7.1f} ms   {median / medians[reference]:.2f}x {reference}"
              f"   {median / medians['jax, XLA conv']:.2f}x XLA conv")
    if args.profile:
        profile(batch)


if __name__ == "__main__":
    main()
