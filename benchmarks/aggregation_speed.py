"""Step time and memory of every gradient aggregator at both levels, as ratios to equal weighting (EW).

Setups (issue 5): the seed CNN on 64x64x3 images with T = 4 houses-style tasks (batch 64), and
an MLP trunk 512-1024-1024-256 on 512-d inputs (batch 256) with T in {2, 8, 32} regression
heads. Rows: EW; every aggregator after equal weights at the feature level (gradients w.r.t.
the shared representation) and at the parameter level (the exact Gramian over all shared
parameters, :mod:`mtl_jax.train.parameter_gramian`); and, for reference, the naive
parameter-level Gramian: the full ``T x P`` Jacobian from ``jax.jacrev`` (a ``vmap`` over VJPs)
followed by ``J J^T`` and UPGrad.

How it times: each method runs blocks of ``--block`` back-to-back steps (steady state, as in
training: the host dispatches ahead while the device works), one block per method in turn,
in a shuffled order each round (``--samples`` rounds), so drift on this noisy machine hits
all alike; the table gives the median block time per step, absolute and as a ratio to EW's.
It also reports the compiled step's temporary memory (XLA's ``memory_analysis``) next to the
size of the ``T x P`` Jacobian, and checks that no step recompiled after its first call.

When ``torch`` and ``torchjd`` are importable (never dependencies of mtl_jax: see
benchmarks/README.md for the separate venv), the MLP setups also time, in the same process
and the same interleaving, PyTorch's plain summed-loss step and torchjd's ``mtl_backward``
with ``UPGrad`` on the same architecture and batch, and print both ratios.

    python benchmarks/aggregation_speed.py [--samples 15] [--block 5] [--quick] [--methods upgrad,mgda] [--mlp-only]

Targets (issue 5): feature level <= 1.3x EW at every T; parameter level <= 4x at T = 8 and
<= 12x at T = 32 on the MLP; memory of the Gramian path not growing with T x P.
"""
from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import mtl_jax as mtl
from mtl_jax import cpu
from mtl_jax.aggregation.upgrad import upgrad_coefficients
from mtl_jax.data.batching import batches
from mtl_jax.experiment import make_weighting
from mtl_jax.models import MLP, SeedCNN, hard_sharing
from mtl_jax.models.mixed_precision import mixed_precision
from mtl_jax.registry import AGGREGATORS
from mtl_jax.tasks import task_losses
from mtl_jax.train import create_train_state, make_train_step
from mtl_jax.train.state import TrainState

cpu.enable_fast_convolutions()  # before JAX starts, as the mtl-jax command does

AGGREGATORS_TIMED = [name for name, _ in AGGREGATORS.describe() if name not in ("mean", "sum")]


def setups(quick: bool, task_counts=(2, 8, 32)):
    rng = np.random.default_rng(0)
    tasks = (mtl.regression("price"), mtl.regression("windows"), mtl.classification("kind", 3),
             mtl.classification("storeys", 3))
    images = {"image": rng.integers(0, 255, (64, 64, 64, 3), dtype=np.uint8),
              **{t.name: rng.normal(size=64).astype(np.float32) for t in tasks[:2]},
              **{t.name: rng.integers(0, 3, 64).astype(np.int32) for t in tasks[2:]}}
    yield "seed CNN, T=4", hard_sharing(SeedCNN(), tasks, head_hidden=(64,)), tasks, images, "image"
    for num_tasks in (2, 8) if quick else task_counts:
        tasks = tuple(mtl.regression(f"t{i}") for i in range(num_tasks))
        data = {"x": rng.normal(size=(256, 512)).astype(np.float32),
                **{t.name: rng.normal(size=256).astype(np.float32) for t in tasks}}
        yield f"MLP 512-1024-1024-256, T={num_tasks}", hard_sharing(MLP((1024, 1024, 256)), tasks), tasks, data, "x"


def naive_jacobian_step(model, tasks, optimizer, input_key):
    """The reference: the full T x P Jacobian of the shared parameters, its Gramian, UPGrad."""

    def step(state: TrainState, batch):
        def losses(params):
            predictions = model.apply({"params": params}, batch[input_key], train=True)
            return task_losses(tasks, predictions, batch)[0]

        jacobian = jax.jacrev(losses)(state.params)  # leaves [T, ...]: T x P floats at once
        flat = jnp.concatenate([leaf.reshape(len(tasks), -1) for leaf in jax.tree.leaves(jacobian["trunk"])], 1)
        weights = upgrad_coefficients(flat @ flat.T)
        grads = jax.tree.map(lambda leaf: jnp.tensordot(weights, leaf, axes=1), jacobian)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        return state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                             opt_state=opt_state), weights

    return jax.jit(step, donate_argnums=0)


def torch_steps(num_tasks: int, batch):
    """PyTorch's EW step and torchjd's UPGrad step on the MLP setup, or {} without torch/torchjd."""
    try:
        import torch
        from torchjd import autojac
        from torchjd.aggregation import UPGrad
    except ImportError:
        return {}
    torch.manual_seed(0)
    x = torch.from_numpy(np.asarray(batch["x"]))
    targets = [torch.from_numpy(np.asarray(batch[f"t{i}"])) for i in range(num_tasks)]

    def build():
        trunk = torch.nn.Sequential(torch.nn.Linear(512, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 1024),
                                    torch.nn.ReLU(), torch.nn.Linear(1024, 256), torch.nn.ReLU())
        heads = torch.nn.ModuleList(torch.nn.Linear(256, 1) for _ in range(num_tasks))
        return trunk, heads, torch.optim.Adam([*trunk.parameters(), *heads.parameters()], lr=1e-3)

    def losses(trunk, heads):
        features = trunk(x)
        return features, [torch.mean((head(features)[:, 0] - t) ** 2) for head, t in zip(heads, targets)]

    trunk_ew, heads_ew, optimizer_ew = build()

    def ew():
        optimizer_ew.zero_grad()
        sum(losses(trunk_ew, heads_ew)[1]).backward()
        optimizer_ew.step()

    trunk_jd, heads_jd, optimizer_jd = build()
    try:
        aggregator = UPGrad()
    except ImportError as error:  # torchjd's default projector needs qpsolvers and quadprog
        print(f"torchjd not timed: {error}")
        return {}

    def upgrad():  # torchjd 0.18: the shared parameters' Jacobian into .jac, then aggregated into .grad
        optimizer_jd.zero_grad()
        features, task_losses_ = losses(trunk_jd, heads_jd)
        autojac.mtl_backward(task_losses_, features)
        autojac.jac_to_grad(list(trunk_jd.parameters()), aggregator)
        optimizer_jd.step()

    return {"torch EW": ew, "torchjd UPGrad (parameter)": upgrad}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=15, help="rounds: timed blocks per method and setup")
    parser.add_argument("--block", type=int, default=5, help="back-to-back steps per timed block")
    parser.add_argument("--quick", action="store_true", help="fewer setups, methods and samples (a smoke run)")
    parser.add_argument("--methods", default="", help="comma-separated aggregators to time (default: all)")
    parser.add_argument("--mlp-only", action="store_true", help="skip the seed CNN setup")
    parser.add_argument("--tasks", default="2,8,32", help="comma-separated task counts of the MLP setups")
    parser.add_argument("--precision", default="float32", choices=["float32", "bfloat16"],
                        help="the models' compute dtype (mtl_jax/models/mixed_precision.py)")
    args = parser.parse_args()
    samples = 3 if args.quick else args.samples
    names = AGGREGATORS_TIMED[:3] if args.quick else AGGREGATORS_TIMED
    if args.methods:
        names = [n for n in args.methods.split(",") if n]
    order = np.random.default_rng(0)
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {args.precision}; median over {samples} interleaved blocks of "
          f"{args.block} back-to-back steps per method")
    for title, model, tasks, data, input_key in setups(args.quick, tuple(int(t) for t in args.tasks.split(","))):
        if args.mlp_only and input_key != "x":
            continue
        model = mixed_precision(model, args.precision)
        batch = next(batches(data, len(next(iter(data.values())))))
        optimizer = optax.adam(1e-3)
        runs, memory = {}, {}
        variants = [("equal (EW)", "none", "feature")] + [(f"{n} (feature)", n, "feature") for n in names] + \
            [(f"{n} (parameter)", n, "parameter") for n in names if n != "graddrop"]
        for label, aggregator, level in variants:
            weighting = make_weighting("equal", tasks, {}, steps_per_epoch=50, aggregator=aggregator, level=level)
            step = make_train_step(model, tasks, optimizer, weighting, input_key)
            state = create_train_state(model, tasks, optimizer, weighting, batch[input_key][:2])
            memory[label] = step.lower(state, batch).compile().memory_analysis()
            state, out = step(state, batch)  # compile
            jax.block_until_ready(out)
            runs[label] = [step, state, []]
        naive = naive_jacobian_step(model, tasks, optimizer, input_key)
        weighting = make_weighting("equal", tasks, {}, steps_per_epoch=50)
        state = create_train_state(model, tasks, optimizer, weighting, batch[input_key][:2])
        memory["naive Jacobian + UPGrad"] = naive.lower(state, batch).compile().memory_analysis()
        state, out = naive(state, batch)
        jax.block_until_ready(out)
        runs["naive Jacobian + UPGrad"] = [naive, state, []]
        torch_runs = torch_steps(len(tasks), batch) if input_key == "x" else {}
        for name, function in torch_runs.items():
            function()  # warm-up
            runs[name] = [function, None, []]
        for _ in range(samples):  # one block of every method in turn, shuffled: drift hits all alike
            for name in order.permutation(list(runs)):
                run = runs[name]
                step, state, times = run
                start = time.perf_counter()
                if state is None:
                    for _ in range(args.block):
                        step()
                else:
                    for _ in range(args.block):
                        state, out = step(state, batch)
                    jax.block_until_ready(state)
                times.append((time.perf_counter() - start) / args.block)
                run[1] = state
        medians = {name: statistics.median(run[2]) for name, run in runs.items()}
        shared = sum(x.size for x in jax.tree.leaves(runs["equal (EW)"][1].params["trunk"]))
        jacobian_mib = len(tasks) * shared * 4 / 2 ** 20
        print(f"\n{title}: EW step {1e3 * medians['equal (EW)']:.1f} ms; T x P Jacobian {jacobian_mib:.0f} MiB")
        for name, run in runs.items():
            if run[1] is None:
                continue
            compiled = run[0]._cache_size()
            temp = memory[name].temp_size_in_bytes / 2 ** 20 if memory[name] is not None else float("nan")
            print(f"  {name:<26} {1e3 * medians[name]:7.1f} ms {medians[name] / medians['equal (EW)']:6.2f}x EW"
                  f"   temp memory {temp:6.0f} MiB   compiled programs: {compiled}"
                  + ("" if compiled == 1 else "  <- RECOMPILED"))
        if torch_runs:
            base = medians["torch EW"]
            print(f"  torch EW                   {1e3 * base:7.1f} ms   1.00x torch EW")
            ours = medians.get("upgrad (parameter)")
            print(f"  torchjd UPGrad (parameter) {1e3 * medians['torchjd UPGrad (parameter)']:7.1f} ms "
                  f"{medians['torchjd UPGrad (parameter)'] / base:6.2f}x torch EW"
                  + (f"   (mtl_jax upgrad (parameter): {ours / medians['equal (EW)']:.2f}x EW)" if ours else ""))


if __name__ == "__main__":
    main()
