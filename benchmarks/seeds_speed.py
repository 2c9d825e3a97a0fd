"""S seeds as one vmapped program (``fit_seeds``) against the same S runs one after another
(``fit(seed=s)``), on the seed CNN and on the MLP trunk, in one process.

    python benchmarks/seeds_speed.py [--seeds 4 8] [--train 512] [--epochs 2] [--batch 64]

Each case trains on embedded houses data (64x64x3 images, price + kind) with validation after
every epoch, so a run's wall time holds what a compare cell pays: compilation, steps,
evaluation. Prints per model and S the seconds of S sequential runs, of one vmapped group, the
ratio (vmapped / sequential: below 1 is faster), and the largest parameter difference
between the two (float rounding only: the runs are the same computation).
"""
from __future__ import annotations

import argparse
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--train", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--models", nargs="+", default=["seed_cnn", "mlp"])
    args = parser.parse_args()

    from mtl_jax import cpu

    cpu.enable_fast_convolutions()
    import jax
    import numpy as np

    import mtl_jax as mtl
    from mtl_jax.data import load_houses
    from mtl_jax.models import MLP, SeedCNN, hard_sharing
    from mtl_jax.train.seeds import fit_seeds

    data = load_houses(train_size=args.train, validation_size=256, test_size=16, seed=0)
    tasks = (mtl.regression("price"), mtl.classification("kind", 3, weight=0.5))
    trunks = {"seed_cnn": lambda: hard_sharing(SeedCNN(), tasks),
              "mlp": lambda: hard_sharing(MLP((256, 256)), tasks)}
    options = dict(validation=data["validation"], epochs=args.epochs, batch_size=args.batch, progress=False)
    print(f"devices: {jax.devices()}; train {args.train}, {args.epochs} epochs, batch {args.batch}")
    print("| model | S | S runs one by one (s) | S runs vmapped (s) | vmapped / sequential | max param diff |")
    print("|---|---|---|---|---|---|")
    for name in args.models:
        model = trunks[name]()
        for count in args.seeds:
            seeds = list(range(count))
            start = time.perf_counter()
            separate = [mtl.fit(model, tasks, data["train"], seed=seed, **options) for seed in seeds]
            jax.block_until_ready([r.state for r in separate])
            sequential = time.perf_counter() - start
            start = time.perf_counter()
            together = fit_seeds(model, tasks, data["train"], seeds=seeds, **options)
            jax.block_until_ready([r.state for r in together])
            vmapped = time.perf_counter() - start
            difference = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                             for one, two in zip(separate, together)
                             for a, b in zip(jax.tree.leaves(one.state.params), jax.tree.leaves(two.state.params)))
            print(f"| {name} | {count} | {sequential:.1f} | {vmapped:.1f} | {vmapped / sequential:.2f} | "
                  f"{difference:.1e} |", flush=True)


if __name__ == "__main__":
    main()
