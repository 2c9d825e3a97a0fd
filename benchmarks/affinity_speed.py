"""Cost of one inter-task affinity measurement against one training step (the seed CNN, houses-sized
batches), in one process, for the lookaheads vmapped over tasks (what mtl_jax does) and in a
``lax.map`` over tasks (what it did before: XLA's CPU backend runs the model's gradient much
slower inside a loop body).

    python benchmarks/affinity_speed.py [--tasks 5] [--batch 32] [--repeats 5]

Prints the median seconds of each and its ratio to the equal-weight train step.
"""
from __future__ import annotations

import argparse
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=5)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from mtl_jax import cpu

    cpu.enable_fast_convolutions()
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    import mtl_jax as mtl
    from mtl_jax.data.batching import select_inputs
    from mtl_jax.diagnostics.affinity import make_affinity_step
    from mtl_jax.models import SeedCNN, hard_sharing
    from mtl_jax.models.contract import SHARED
    from mtl_jax.tasks import task_losses
    from mtl_jax.train import create_train_state, make_train_step
    from mtl_jax.weighting import static

    tasks = tuple(mtl.regression(f"t{i}") for i in range(args.tasks))
    rng = np.random.default_rng(0)
    batch = {"image": rng.uniform(size=(args.batch, 64, 64, 3)).astype(np.float32),
             **{t.name: rng.normal(size=args.batch).astype(np.float32) for t in tasks}}
    model = hard_sharing(SeedCNN(), tasks, head_hidden=(64,))
    weighting, optimizer = static([1.0] * len(tasks)), optax.adam(1e-3)
    state = create_train_state(model, tasks, optimizer, weighting, batch["image"][:2])
    params = jax.tree.map(jnp.copy, state.params)
    step = make_train_step(model, tasks, optimizer, weighting, "image")

    @jax.jit
    def looped(params, batch, learning_rate):  # the former implementation: lax.map over tasks
        inputs = select_inputs(batch, "image")
        shared = {k: v for k, v in params.items() if model.param_owner(k) == SHARED}

        def losses(shared_params):
            predictions = model.apply({"params": {**params, **shared_params}}, inputs, train=False)
            return task_losses(tasks, predictions, batch)[0]

        def lookahead(i):
            grads = jax.grad(lambda s: losses(s)[i])(shared)
            return losses(jax.tree.map(lambda p, g: p - learning_rate * g, shared, grads))

        return 1.0 - jax.lax.map(lookahead, jnp.arange(len(tasks))) / losses(shared)[None, :]

    def timed(fn):
        jax.block_until_ready(fn())
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            jax.block_until_ready(fn())
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    holder = [state]  # the step donates its state: train on from the new one

    def train_step():
        holder[0], out = step(holder[0], batch)
        return out

    train = timed(train_step)
    vmapped = timed(lambda: make_affinity_step(model, tasks, "image")(params, batch, 0.01))
    loop = timed(lambda: looped(params, batch, 0.01))
    print(f"T = {args.tasks}, batch {args.batch}, {jax.devices()[0].platform}")
    print("| what | seconds | / train step |")
    print("| --- | --- | --- |")
    for name, seconds in (("train step (equal weights)", train), ("affinity, vmapped over tasks", vmapped),
                          ("affinity, lax.map over tasks", loop)):
        print(f"| {name} | {seconds:.3f} | {seconds / train:.1f}x |")


if __name__ == "__main__":
    main()
