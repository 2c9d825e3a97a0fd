"""Several seeds of one configuration trained as one compiled program: ``fit_seeds``.

A comparison of MTL methods trains every configuration with S seeds. Run one after another,
each run pays its own compilation and, on an accelerator, leaves the device mostly idle on
small models; ``fit_seeds`` trains the S runs *together*: their train states are stacked on a
leading axis and one ``jax.vmap``-ed train step (:func:`~mtl_jax.train.step.make_seeds_train_step`)
advances all of them, compiled once. Everything random is per seed, exactly as in
``fit(..., seed=s)``:

* initialisation: run ``s``'s parameters, optimizer and method state come from
  ``create_train_state(..., seed=s)`` (initialised for all seeds in one vmapped program);
* dropout and the methods' random keys: ``fold_in(rng_s, step)`` from each state's own key;
* shuffling: run ``s`` reads ``batches(train, batch_size, seed=s, epoch=e)``; the S batches of
  a step are stacked (a step reads S batches);
* method state (loss histories, Adam moments of learned weights, solver warm starts...) lives
  in each run's slice of the stacked state.

So run ``s`` of ``fit_seeds`` computes what ``fit(..., seed=s)`` computes, up to the
floating-point reassociation of batched operations (``tests/test_seeds.py`` checks parameters
and histories against separate runs). Runs are independent also in how they end: a run whose
step is not finite under ``nonfinite="raise"`` ends with that error (the others go on), and
early stopping ends each run at its own epoch (the group trains on while any run is active;
a finished run's state and history are kept as they were when it ended).

What ``fit`` does beyond stepping is not repeated here: no workdir, checkpoints, logs or
plots (an interrupted group starts again), validation at epoch ends only. The best
parameters by ``best_metric`` are kept in memory per run. Memory grows with S (S states, S
batches' activations): where S runs do not fit, train fewer at once
(``mtl-jax compare`` halves a group that runs out of memory).
"""
from __future__ import annotations

import sys
import time
from typing import Any, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from mtl_jax import checks
from mtl_jax.balancing import Method
from mtl_jax.data.batch_streams import as_dataset, is_batch_stream
from mtl_jax.data.batching import batches, first_batch, steps_per_epoch
from mtl_jax.data.sources import head
from mtl_jax.tasks import Task, static_weights
from mtl_jax.train import epoch_stats
from mtl_jax.train.hooks.nonfinite import not_finite
from mtl_jax.train.hooks.progress import epoch_line, progress_mode
from mtl_jax.train.state import create_train_state, run_once_compiler_options
from mtl_jax.train.step import InputKey, make_seeds_eval_step, make_seeds_train_step, select_inputs
from mtl_jax.weighting.static import static

__all__ = ["SeedRun", "fit_seeds", "evaluate_seeds", "stack", "unstack"]


class SeedRun(NamedTuple):
    """One seed's run: its final state (None if it failed), history (as ``fit``'s: ``epoch``,
    ``train/...``, ``validation/...``), best parameters and their step by ``best_metric`` (else
    None), whether early stopping ended it, and the error that ended it (None if it finished)."""
    seed: int
    state: Any
    history: dict[str, list]
    best_params: Any = None
    best_step: int | None = None
    stopped_early: bool = False
    error: str | None = None


def stack(trees: Sequence[Any]) -> Any:
    """Pytrees of equal structure stacked leaf by leaf on a new leading axis."""
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def unstack(tree: Any, index: int) -> Any:
    """Slice ``index`` of a stacked pytree (new buffers: safe to keep when ``tree`` is donated)."""
    return jax.tree.map(lambda leaf: leaf[index], tree)


def check_seeds(seeds: Sequence[int]) -> tuple[int, ...]:
    seeds = tuple(seeds)
    if not seeds:
        raise ValueError("seeds: give at least one seed")
    for seed in seeds:
        checks.check_count("seed", seed, 0)
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct, got {list(seeds)}")
    return seeds


def init_states(model, tasks, optimizer, weighting, example, seeds: tuple[int, ...]):
    """``create_train_state(..., seed=s)`` for every seed, stacked, as one compiled program."""
    def one(seed):
        return create_train_state(model, tasks, optimizer, weighting, example, seed)
    program = jax.jit(jax.vmap(one), compiler_options=run_once_compiler_options())
    return program(jnp.asarray(seeds, jnp.uint32))


def _stacked_batches(train, batch_size: int, seeds, epoch: int, check):
    """The S runs' batches of ``epoch`` (each run its own shuffle), stacked per step. An iterable
    of batches has one order of its own: it is read once and every run gets the same batch."""
    if is_batch_stream(train):
        for batch in batches(train, batch_size, epoch=epoch, check=check):
            yield {key: np.broadcast_to(value, (len(seeds), *np.shape(value))) for key, value in batch.items()}
        return
    readers = [batches(train, batch_size, seed=seed, epoch=epoch, check=check) for seed in seeds]
    for group in zip(*readers, strict=True):
        yield {key: np.stack([batch[key] for batch in group]) for key in group[0]}


def _evaluate_stacked(eval_step, tasks, params, data, batch_size, count, check=None) -> list[dict[str, float]]:
    stats = [epoch_stats.init() for _ in range(count)]
    for batch in batches(data, batch_size, check=check):
        out = jax.device_get(eval_step(params, batch))
        for index in range(count):
            stats[index] = epoch_stats.add(stats[index], tasks, unstack(out, index))
    return [epoch_stats.summary(tasks, s) for s in stats]


def evaluate_seeds(model: nn.Module, tasks: Sequence[Task], params: Sequence[Any], data, batch_size: int = 256,
                   input_key: InputKey = "image") -> list[dict[str, float]]:
    """:func:`~mtl_jax.train.loop.evaluate` of several runs' parameters in one pass over ``data``
    (one vmapped program): a list of exact metrics ``{"<task>/<metric>": value}``, one per run."""
    tasks = tuple(tasks)
    checks.check_tasks(model, tasks)
    data = as_dataset(data)
    checks.check_count("batch_size", batch_size, 1)
    check = checks.dataset_checks(model, tasks, data, input_key)
    params = list(params)
    checks.check_input_shape(model, params[0], select_inputs(head(data, 8), input_key))
    return _evaluate_stacked(make_seeds_eval_step(model, tasks, input_key), tasks, stack(params), data, batch_size,
                             len(params), check)


def fit_seeds(model: nn.Module, tasks: Sequence[Task], train, *, seeds: Sequence[int], validation=None,
              epochs: int = 10, batch_size: int = 64, optimizer: optax.GradientTransformation | None = None,
              weighting: Method | None = None, input_key: InputKey = "image", eval_batch_size: int | None = None,
              best_metric: str | None = None, early_stopping_patience: int = 0, min_delta: float = 0.0,
              nonfinite: str = "raise", penalty=None, progress: bool | None = None,
              fetch_every: int = 8) -> list[SeedRun]:
    """Trains one run per seed in ``seeds`` together (one vmapped step) and returns a
    :class:`SeedRun` per seed, in order. The arguments mean what they mean for
    :func:`~mtl_jax.train.loop.fit` (``train``/``validation`` as there: arrays, record sources, a
    TaskMixture or batches); ``nonfinite="raise"`` ends the failing run with its error in its
    :class:`SeedRun` (the others train on), ``"skip"`` counts the step (``skipped_steps``).

    The seeds train on one device (no mesh): with several processes each trains every seed on
    its own first device, so run it in one process (``mtl-jax compare`` over several processes
    trains seeds one by one over the mesh instead).

    Raises ValueError/KeyError for bad data, seeds or options, before anything is compiled.
    """
    from mtl_jax.train.loop import DEFAULT_OPTIMIZER, _monitor, checked_data  # the same checks as fit

    seeds = check_seeds(seeds)
    tasks, train, validation, check_train, check_validation = checked_data(model, tasks, train, validation,
                                                                           input_key, nonfinite, epochs)
    for data in (train, validation):
        if is_batch_stream(data) and data.shard is not None and data.shard[1] > 1:
            raise ValueError("fit_seeds trains in each process on its own device: give it whole batches, not a "
                             "function (epoch, shard) reading one process's part")
    for name, value in (("batch_size", batch_size), ("fetch_every", fetch_every),
                        ("eval_batch_size", 1 if eval_batch_size is None else eval_batch_size)):
        checks.check_count(name, value, 1)
    monitor = _monitor(best_metric, early_stopping_patience, min_delta, tasks, validation)
    optimizer = optimizer or DEFAULT_OPTIMIZER
    weighting = weighting or static(tuple(static_weights(tasks).tolist()))
    example = select_inputs(first_batch(train, batch_size), input_key)
    abstract = jax.eval_shape(lambda: create_train_state(model, tasks, optimizer, weighting, example, 0))
    checks.check_input_shape(model, abstract.params, example, "train inputs")
    if validation is not None:
        checks.check_input_shape(model, abstract.params, select_inputs(head(validation, 8), input_key),
                                 "validation inputs")

    count = len(seeds)
    train_step = make_seeds_train_step(model, tasks, optimizer, weighting, input_key, penalty)
    eval_step = make_seeds_eval_step(model, tasks, input_key)
    states = init_states(model, tasks, optimizer, weighting, example, seeds)
    histories: list[dict[str, list]] = [{"epoch": []} for _ in seeds]
    records = [monitor.init() if monitor else None for _ in seeds]
    ended: list[Any] = [None] * count  # a run that ended: (state, stopped_early, error)
    best: list[Any] = [None] * count
    skipped = [0] * count
    mode = progress_mode(progress)
    bar = None
    if mode == "bar":
        from tqdm.auto import tqdm
        bar = tqdm(total=epochs * (steps_per_epoch(train, batch_size) or 0) or None, unit="step",
                   dynamic_ncols=True, desc=f"{count} seeds")
    step = 0
    try:
        for epoch in range(epochs):
            active = [index for index in range(count) if ended[index] is None]
            if not active:
                break
            started, stats, pending = time.perf_counter(), [epoch_stats.init() for _ in seeds], []

            def deliver(chunk):
                for at, out in zip([s for s, _ in chunk], jax.device_get([o for _, o in chunk])):
                    for index in range(count):
                        if ended[index] is not None:
                            continue
                        mine = unstack(out, index)
                        if not bool(mine["finite"]):
                            if nonfinite == "raise":
                                ended[index] = (None, False, f"FloatingPointError: non-finite "
                                                             f"{not_finite(tasks, mine)} at step {at} (epoch "
                                                             f"{epoch + 1}) of seed {seeds[index]}")
                                continue
                            skipped[index] += 1
                        stats[index] = epoch_stats.add(stats[index], tasks, mine)

            for batch in _stacked_batches(train, batch_size, seeds, epoch, check_train):
                states, out = train_step(states, batch)
                step += 1
                pending.append((step, out))
                if len(pending) > fetch_every:
                    deliver(pending[:-1])
                    del pending[:-1]
                if bar is not None:
                    bar.update()
            deliver(pending)
            evaluations = (_evaluate_stacked(eval_step, tasks, states.params, validation,
                                             eval_batch_size or batch_size, count, check_validation)
                           if validation is not None else None)
            for index in range(count):
                if ended[index] is not None:
                    continue
                row = {"epoch": epoch + 1, **{f"train/{k}": v for k, v in
                                              epoch_stats.summary(tasks, stats[index]).items()}}
                if evaluations is not None:
                    row.update({f"validation/{k}": v for k, v in evaluations[index].items()})
                row["skipped_steps"] = skipped[index]
                for key, value in row.items():
                    histories[index].setdefault(key, []).append(value)
                if monitor is not None:
                    records[index], improved = monitor.update(records[index], row[monitor.metric], step)
                    if improved:
                        best[index] = unstack(states.params, index)
                    if monitor.should_stop(records[index]) and epoch + 1 < epochs:
                        ended[index] = (unstack(states, index), True, None)
            if mode == "lines":
                line = epoch_line(tasks, epoch + 1, epochs, time.perf_counter() - started,
                                  _mean_row([histories[i] for i in range(count) if len(histories[i]["epoch"])
                                             == epoch + 1]))
                print(f"{line}  (mean of {sum(1 for e in ended if e is None)} active seeds)", file=sys.stderr,
                      flush=True)
    finally:
        if bar is not None:
            bar.close()
    runs = []
    for index, seed in enumerate(seeds):
        state, stopped, error = ended[index] or (unstack(states, index), False, None)
        record = records[index]
        runs.append(SeedRun(seed, state, histories[index], best[index],
                            record["best_step"] if record else None, stopped, error))
    return runs


def _mean_row(histories: list[dict[str, list]]) -> dict[str, float]:
    """The latest epoch's numbers averaged over runs (for the progress line)."""
    if not histories:
        return {}
    keys = [k for k, v in histories[0].items() if v and isinstance(v[-1], (int, float))]
    return {key: float(np.mean([h[key][-1] for h in histories if key in h])) for key in keys}
