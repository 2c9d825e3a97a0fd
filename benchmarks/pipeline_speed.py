"""Input-pipeline speed of every embedded dataset against the seed CNN's training step (issue 19).

For each generated TFDS builder (``houses``, ``clicks``, ``multi_digits``, ``reviews``,
``lesions``), streamed as the configs stream it (``in_memory=False``: a ``RecordSource`` over the
array_record data source with one grain thread), the batches/s of the pipeline alone (batch 64,
nothing consuming the batches), and the seed CNN's step (hard sharing, price + kind, Adam,
batch 64 of 64x64x3 houses, fed from memory) in steps/s, all measured in one process, one
after the other, so the ratio ``pipeline / step`` is read from one run. The target is >= 5x:
the pipeline must never be what the step waits on.

    python benchmarks/pipeline_speed.py [--examples 3000] [--batches 150] [--steps 100]

The datasets are generated into ``$MTL_JAX_DATA_DIR`` the first time (seconds each).
"""
from __future__ import annotations

import argparse
import time


def step_rate(steps: int, data_dir: str | None) -> float:
    """Steps/s of the seed CNN on in-memory houses (batch 64)."""
    import jax
    import optax

    import mtl_jax as mtl
    from mtl_jax.data import batches, load_houses
    from mtl_jax.models import SeedCNN, hard_sharing
    from mtl_jax.train import create_train_state, make_train_step
    from mtl_jax.weighting import static

    data = load_houses(train_size=64 * 20, validation_size=16, test_size=16, data_dir=data_dir)["train"]
    data = {k: data[k] for k in ("image", "price", "kind")}
    tasks = (mtl.regression("price"), mtl.classification("kind", 3, weight=0.5))
    model, optimizer, weighting = hard_sharing(SeedCNN(), tasks), optax.adam(1e-3), static([1.0, 0.5])
    step = make_train_step(model, tasks, optimizer, weighting, "image")
    feed = [batch for _, batch in zip(range(20), batches(data, 64, seed=0, epoch=0))]
    state = create_train_state(model, tasks, optimizer, weighting, feed[0]["image"][:2])
    state, out = step(state, feed[0])
    jax.block_until_ready(out)
    start = time.perf_counter()
    for i in range(steps):
        state, out = step(state, feed[i % len(feed)])
    jax.block_until_ready(out)
    return steps / (time.perf_counter() - start)


def pipeline_rate(name: str, examples: int, count: int, data_dir: str | None) -> float:
    """Batches/s of dataset ``name``'s streamed train split (batch 64, one grain thread)."""
    from mtl_jax.data import batches
    from mtl_jax.registry import DATASETS

    import mtl_jax.experiment  # noqa: F401 - registers the datasets

    sizes = {"train_size": examples, "validation_size": 64, "test_size": 64}
    train = DATASETS.get(name).load(data_dir=data_dir, in_memory=False, **sizes)["train"]
    reader = batches(train, 64, seed=0, epoch=0)
    next(reader)  # the thread started, the files opened
    start = time.perf_counter()
    read = sum(1 for _ in zip(range(count), reader))
    return read / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=3000, help="train examples of each dataset")
    parser.add_argument("--batches", type=int, default=150, help="timed batches per pipeline (at most an epoch)")
    parser.add_argument("--steps", type=int, default=100, help="timed training steps")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    from mtl_jax import cpu

    cpu.enable_fast_convolutions()  # as the mtl-jax command runs the step
    count = min(args.batches, args.examples // 64 - 1)
    steps = step_rate(args.steps, args.data_dir)
    print(f"seed CNN step: {steps:.1f} steps/s (batch 64)", flush=True)
    print("\n| dataset | pipeline batches/s | / seed CNN steps/s |")
    print("| --- | --- | --- |")
    for name in ("houses", "clicks", "multi_digits", "reviews", "lesions"):
        rate = pipeline_rate(name, args.examples, count, args.data_dir)
        print(f"| {name} | {rate:.1f} | {rate / steps:.1f}x |", flush=True)


if __name__ == "__main__":
    main()
