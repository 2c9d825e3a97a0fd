"""What checkpointing costs the training step: orbax's asynchronous saves against blocking ones.

The seed CNN (hard sharing, batch 64) trains on generated ``houses`` data through ``fit`` with a
workdir, saving a checkpoint every ``--every`` steps, in three settings measured in one process,
interleaved over ``--rounds`` rounds (these machines are noisy; only ratios within one run mean
something):

* ``none``: a workdir, checkpoints only at the epoch end (the reference);
* ``sync``: every N steps, each save waiting for the disk (``async_checkpoints=False``);
* ``async``: every N steps, each save returning once the arrays are copied (the default).

Timed by a hook from the first step's dispatch to the sync after the last step (every save
but the final epoch-end one, which all three settings share, is inside). Prints milliseconds
per step (median over rounds) and each setting's ratio to ``none``.

    python benchmarks/checkpoint_speed.py [--steps 60] [--every 5] [--rounds 3]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60, help="steps per run (one epoch)")
    parser.add_argument("--every", type=int, default=5, help="checkpoint every N steps")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from mtl_jax import cpu

    cpu.enable_fast_convolutions()
    import jax
    import optax

    import mtl_jax as mtl
    from mtl_jax.data import load_houses
    from mtl_jax.models import SeedCNN, hard_sharing
    from mtl_jax.train.hooks import Hook

    class Timer(Hook):
        """Seconds from the first step's dispatch to the epoch end's sync (all outputs read)."""

        def before_step(self, run, batch):
            if run.meta["step_in_epoch"] == 0:
                self.start = time.perf_counter()

        def at_sync(self, run, row, end_of_epoch):
            if end_of_epoch:
                self.seconds = time.perf_counter() - self.start

    batch = 64
    with tempfile.TemporaryDirectory() as scratch:
        splits = load_houses(train_size=args.steps * batch, validation_size=64, test_size=64,
                             data_dir=str(Path(scratch) / "data"))
        train = {k: splits["train"][k] for k in ("image", "price", "kind")}
        tasks = (mtl.regression("price"), mtl.classification("kind", 3, weight=0.5))
        model = hard_sharing(SeedCNN(), tasks)
        options = {"epochs": 1, "batch_size": batch, "optimizer": optax.adam(1e-3), "progress": False,
                   "tensorboard": False, "keep_checkpoints": 2}
        settings = {"none": {}, "sync": {"checkpoint_every_steps": args.every, "async_checkpoints": False},
                    "async": {"checkpoint_every_steps": args.every}}
        mtl.fit(model, tasks, train, workdir=Path(scratch) / "warm-up", **options)  # compiles the step
        seconds: dict[str, list[float]] = {name: [] for name in settings}
        for round_ in range(args.rounds):
            for name, extra in settings.items():
                timer = Timer()
                mtl.fit(model, tasks, train, workdir=Path(scratch) / f"{name}-{round_}", hooks=[timer], **options,
                        **extra)
                seconds[name].append(timer.seconds / args.steps)
    reference = statistics.median(seconds["none"])
    print(f"seed CNN, batch {batch}, {args.steps} steps, checkpoint every {args.every} steps, "
          f"{args.rounds} interleaved rounds ({jax.device_count()} {jax.default_backend()} device)")
    for name, values in seconds.items():
        median = statistics.median(values)
        print(f"  {name:5s}  {1000 * median:7.1f} ms/step   x{median / reference:.3f} of none")


if __name__ == "__main__":
    main()
