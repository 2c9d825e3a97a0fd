"""Peak memory and speed of training from a record source against in-memory arrays (issue 17).

Each measurement runs in a fresh process (peak RSS is per process): the seed CNN on a generated
``houses`` variant, one epoch of ``--steps`` steps (batch 64), the train split either read whole
into memory (``load_houses()``) or streamed (``load_houses(in_memory=False)``: a
``RecordSource`` over the TFDS array_record data source, read by a grain worker thread).
Also timed: the input pipeline alone (batches/s of the streamed source with its thread, nothing
consuming them) against the training step's rate.

    python benchmarks/streaming_memory.py [--big 180000] [--small 5000] [--steps 150]

``--big`` examples take ~11.7 KB each on disk (houses 2.0.0, image and mask as raw bytes;
180,000: ~2.1 GB); the first run generates and
prepares the variant under ``$MTL_JAX_DATA_DIR`` (minutes), later runs reuse it. Preparing runs
in a process of its own, before the measured ones, with TFDS's shuffle buffer raised above the
split's size: over 1 GB TFDS spills examples to disk buckets through ``tf.io.gfile``, which needs
TensorFlow, even for a builder that does not shuffle.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path


def _split_bytes(data_dir: Path, train: int) -> int:
    from mtl_jax.data.houses_builder import Houses

    folders = list(data_dir.glob(f"houses/n{train}-*/{Houses.VERSION}"))
    return sum(f.stat().st_size for f in folders[0].glob("*train*")) if folders else 0


def prepare(train: int, data_dir: str) -> None:
    """Generates and prepares the variant once (its own process: its memory is not measured)."""
    from tensorflow_datasets.core import shuffle

    shuffle.MAX_MEM_BUFFER_SIZE = 1 << 40  # keep every example in memory: no TensorFlow disk buckets
    from mtl_jax.data import load_houses

    load_houses(train_size=train, validation_size=64, test_size=64, data_dir=data_dir, in_memory=False)


def measure(train: int, streamed: bool, steps: int, data_dir: str) -> dict:
    """One process's numbers: prepare/load, then time ``steps`` training steps and the pipeline."""
    import jax
    import optax

    import mtl_jax as mtl
    from mtl_jax import cpu
    from mtl_jax.data import batches, load_houses
    from mtl_jax.models import SeedCNN, hard_sharing
    from mtl_jax.train import create_train_state, make_train_step
    from mtl_jax.weighting import static

    cpu.enable_fast_convolutions()
    start = time.perf_counter()
    splits = load_houses(train_size=train, validation_size=64, test_size=64, data_dir=data_dir,
                         in_memory=not streamed)
    load_seconds = time.perf_counter() - start
    data = splits["train"]
    if not streamed:
        data = {k: data[k] for k in ("image", "price", "kind")}
    tasks = (mtl.regression("price"), mtl.classification("kind", 3, weight=0.5))
    model, optimizer, weighting = hard_sharing(SeedCNN(), tasks), optax.adam(1e-3), static([1.0, 0.5])
    step = make_train_step(model, tasks, optimizer, weighting, "image")
    reader = batches(data, 64, seed=0, epoch=0)
    first = next(reader)
    state = create_train_state(model, tasks, optimizer, weighting, first["image"][:2])
    state, out = step(state, first)
    jax.block_until_ready(out)
    start = time.perf_counter()
    for _, batch in zip(range(steps), reader):
        state, out = step(state, batch)
    jax.block_until_ready(out)
    step_rate = steps / (time.perf_counter() - start)
    pipeline_rate = None
    if streamed:
        start = time.perf_counter()
        count = sum(1 for _ in zip(range(steps), batches(data, 64, seed=0, epoch=1)))
        pipeline_rate = count / (time.perf_counter() - start)
    return {"train": train, "streamed": streamed, "load_s": load_seconds, "steps_per_s": step_rate,
            "pipeline_batches_per_s": pipeline_rate,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--big", type=int, default=180000, help="train examples of the large variant")
    parser.add_argument("--small", type=int, default=5000, help="train examples of the reference variant")
    parser.add_argument("--steps", type=int, default=150, help="timed training steps per run")
    parser.add_argument("--data-dir", default=None, help="TFDS data dir (default: $MTL_JAX_DATA_DIR or the cache)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--prepare", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.prepare:
        prepare(args.prepare, args.data_dir)
        return
    if args.child:
        train, streamed = json.loads(args.child)
        print(json.dumps(measure(train, streamed, args.steps, args.data_dir)))
        return
    from mtl_jax.data.generated import default_data_dir

    data_dir = Path(args.data_dir or default_data_dir())
    for train in (args.small, args.big):
        subprocess.run([sys.executable, __file__, "--data-dir", str(data_dir), "--prepare", str(train)], check=True)
    rows = []
    for train, streamed in ((args.small, False), (args.small, True), (args.big, True), (args.big, False)):
        command = [sys.executable, __file__, "--steps", str(args.steps), "--data-dir", str(data_dir),
                   "--child", json.dumps([train, streamed])]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            rows.append({"train": train, "streamed": streamed, "error": done.stderr.strip().splitlines()[-1:]})
        else:
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        rows[-1]["split_mb"] = _split_bytes(data_dir, train) / 2**20
        print(json.dumps(rows[-1]), flush=True)
    print("\n| train examples | split on disk | data | peak RSS | steps/s | pipeline batches/s | load |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        if "error" in r:
            print(f"| {r['train']} | {r['split_mb']:.0f} MB | {'streamed' if r['streamed'] else 'in memory'} | "
                  f"failed: {r['error']} | | | |")
            continue
        pipeline = f"{r['pipeline_batches_per_s']:.1f}" if r["pipeline_batches_per_s"] else "-"
        print(f"| {r['train']} | {r['split_mb']:.0f} MB | {'streamed' if r['streamed'] else 'in memory'} | "
              f"{r['peak_rss_mb']:.0f} MB | {r['steps_per_s']:.2f} | {pipeline} | {r['load_s']:.0f} s |")


if __name__ == "__main__":
    main()
