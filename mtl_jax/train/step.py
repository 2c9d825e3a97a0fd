"""The compiled steps: ``train_step(state, batch)``, ``eval_step(params, batch)``, ``predict_step``.

Each is a pure function compiled once with ``jax.jit``; batches always have the same
shapes (the last partial batch is padded and masked, see :mod:`mtl_jax.data.batching`),
so nothing recompiles after the first step. Builders are cached on
``(model, tasks, ...)`` so calling :func:`mtl_jax.train.loop.evaluate` twice reuses the
compiled program.

The train step computes per-task mean losses ``L_i`` over labelled elements, asks the
weighting method for ``w`` (telling it which tasks have a labelled element in the batch: the
others are absent, see :mod:`mtl_jax.balancing`) and minimises ``sum_i stop_gradient(w_i) L_i`` with the optax
optimizer (plus an optional parameter penalty). It returns the step's sufficient statistics (loss sums and counts, metric
statistics of the pre-update forward pass), the weights, the gradient norm, ``finite`` and,
for methods that solve a problem (:mod:`mtl_jax.aggregation.certificate`), the worst solver
residual and its ratio to the tolerance, all still on device. A step whose losses, gradients or updated state (parameters,
optimizer and weighting state) are not finite leaves params, optimizer and weighting state
untouched (only ``step`` advances); the loop then stops with an error naming the tasks and
the step, or counts the step as skipped. With a float16 model's dynamic loss scale
(:mod:`mtl_jax.models.mixed_precision`), a step whose losses are finite but whose scaled
gradient overflowed is no failure: it applies nothing, halves ``state.loss_scale`` and is
flagged ``outputs["overflow"]``.
"""
from __future__ import annotations

import functools
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from mtl_jax import metrics as metrics_lib
from mtl_jax.aggregation import certificate
from mtl_jax.data.batching import InputKey, select_inputs
from mtl_jax.models.mixed_precision import next_loss_scale, scaling_by
from mtl_jax.tasks import Task, prepare, task_losses
from mtl_jax.train.state import TrainState
from mtl_jax.train.task_gradients import GRADIENT_NEEDS, check_gradient_model, weighted_gradients
from mtl_jax.balancing import NEEDS, Info, Method

def tree_finite(tree) -> jax.Array:
    """True when every floating-point leaf of ``tree`` is finite (integer leaves always are)."""
    leaves = [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)
              if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def metric_stats(tasks: Sequence[Task], predictions, batch) -> dict:
    """``{task: {metric: batch statistics}}`` for every task's metrics."""
    out = {}
    for task in tasks:
        prediction, target, mask = prepare(task, predictions[task.name], batch)
        out[task.name] = {m: metrics_lib.get_metric(m).stats(task, prediction, target, mask) for m in task.metrics}
    return out


@functools.lru_cache(maxsize=64)
def make_train_step(model: nn.Module, tasks: tuple[Task, ...], optimizer: optax.GradientTransformation,
                    weighting: Method, input_key: InputKey = "image", penalty: Callable | None = None):
    """Returns the jitted ``train_step(state, batch) -> (state, outputs)``.

    ``penalty`` (optional, hashable): a pure ``params -> scalar`` added to the balanced total,
    e.g. the soft-sharing coupling of :mod:`mtl_jax.models.sharing_penalties`. Its gradient is
    added to the balanced task gradient (never reweighted) and its value is logged as
    ``outputs["penalty"]``.

    The state argument is donated: its buffers are reused for the new state, so keep
    using the returned state, not the one passed in.
    """
    return jax.jit(train_step_function(model, tasks, optimizer, weighting, input_key, penalty), donate_argnums=0)


def make_placed_train_step(model: nn.Module, tasks: tuple[Task, ...], optimizer: optax.GradientTransformation,
                           weighting: Method, input_key: InputKey, penalty: Callable | None, state_shardings):
    """:func:`make_train_step` whose new state keeps the layout ``state_shardings`` on a device
    mesh (:mod:`mtl_jax.train.mesh`): XLA's sharding propagation would otherwise choose where
    the updated arrays live (splitting a small replicated head over the ``fsdp`` axis, say), so
    the next step would see another layout and compile again. The step's outputs are
    replicated, so every process can read them."""
    step = train_step_function(model, tasks, optimizer, weighting, input_key, penalty)

    replicated = jax.sharding.NamedSharding(jax.tree.leaves(state_shardings)[0].mesh, jax.sharding.PartitionSpec())

    def placed_step(state, batch):
        new_state, outputs = step(state, batch)
        # the outputs (sums, weights, Gramian) are read on the host: whole on every process
        return (jax.lax.with_sharding_constraint(new_state, state_shardings),
                jax.lax.with_sharding_constraint(outputs, replicated))

    return jax.jit(placed_step, donate_argnums=0)


@functools.lru_cache(maxsize=16)
def make_seeds_train_step(model: nn.Module, tasks: tuple[Task, ...], optimizer: optax.GradientTransformation,
                          weighting: Method, input_key: InputKey = "image", penalty: Callable | None = None):
    """The train step of :func:`make_train_step` over S runs at once, as one compiled program:
    ``(states, batches) -> (states, outputs)`` with every leaf stacked on a leading axis of size S
    (``jax.vmap``; :mod:`mtl_jax.train.seeds`). Each run's slice is exactly what the single step
    computes on it (up to floating-point reassociation of the batched operations)."""
    return jax.jit(jax.vmap(train_step_function(model, tasks, optimizer, weighting, input_key, penalty)),
                   donate_argnums=0)


def train_step_function(model: nn.Module, tasks: tuple[Task, ...], optimizer: optax.GradientTransformation,
                        weighting: Method, input_key: InputKey = "image", penalty: Callable | None = None):
    """The pure, not yet compiled ``train_step(state, batch) -> (state, outputs)`` (see
    :func:`make_train_step`)."""
    if weighting.needs not in NEEDS:
        raise ValueError(f"weighting needs {weighting.needs!r}; the step provides {NEEDS}")
    if weighting.needs in GRADIENT_NEEDS:
        check_gradient_model(model)

    def train_step(state: TrainState, batch):
        # a float16 model's dynamic loss scale, handed to the model while it is traced
        with scaling_by(None if state.loss_scale is None else state.loss_scale["scale"]):
            return scaled_train_step(state, batch)

    def scaled_train_step(state: TrainState, batch):
        key = jax.random.fold_in(state.rng, state.step)
        weight_key, dropout_key = jax.random.split(key)

        inputs, rngs = select_inputs(batch, input_key), {"dropout": dropout_key}
        gramian = None
        if weighting.needs in GRADIENT_NEEDS:
            grads, predictions, sums, counts, weights, weighting_state, gramian = weighted_gradients(
                model, tasks, state.params, inputs, batch, rngs, weighting.needs,
                lambda info: weighting.update(info, state.weighting_state, weight_key))
        else:
            def objective(params):
                predictions = model.apply({"params": params}, inputs, train=True, rngs=rngs)
                losses, sums, counts = task_losses(tasks, predictions, batch)
                weights, weighting_state = weighting.update(Info(jax.lax.stop_gradient(losses), present=counts > 0),
                                                            state.weighting_state, weight_key)
                total = jnp.sum(jax.lax.stop_gradient(weights) * losses)
                return total, (predictions, sums, counts, weights, weighting_state)

            grads, (predictions, sums, counts, weights, weighting_state) = jax.grad(
                objective, has_aux=True)(state.params)
        penalty_value = None
        if penalty is not None:
            penalty_value, penalty_grads = jax.value_and_grad(penalty)(state.params)
            grads = jax.tree.map(jnp.add, grads, penalty_grads)
        grad_norm = optax.global_norm(grads)

        def update(_):
            updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
            return optax.apply_updates(state.params, updates), opt_state, weighting_state

        def keep_state(_):
            return state.params, state.opt_state, state.weighting_state

        # Finite losses and gradients can still overflow in the update (a huge learning rate):
        # the new state is checked too, by a trial update that XLA fuses into the reduction
        # (nothing is materialised), so the cond below can still write the donated buffers in
        # place. A select per leaf instead keeps old and new copies of every parameter and
        # moment alive (the seed CNN step on CPU ~7-9% slower; benchmarks/README.md).
        losses_finite = jnp.all(jnp.isfinite(sums))
        finite = losses_finite & jnp.isfinite(grad_norm) & tree_finite(update(None))
        # A non-finite step changes nothing but the step count: the loop raises or skips it.
        params, opt_state, weighting_state = jax.lax.cond(finite, update, keep_state, None)
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                                  weighting_state=weighting_state)
        scaling = {}
        if state.loss_scale is not None:
            # An overflow of the scaled gradient (finite losses) is no failure: the step applies
            # nothing, the scale halves, and the step counts as an overflow, not as non-finite.
            loss_scale, overflow = next_loss_scale(state.loss_scale, jnp.isfinite(grad_norm))
            loss_scale = jax.tree.map(lambda new, old: jnp.where(losses_finite, new, old), loss_scale,
                                      state.loss_scale)
            overflow = overflow & losses_finite
            new_state = new_state.replace(loss_scale=loss_scale)
            finite = finite | overflow
            scaling = {"loss_scale": state.loss_scale["scale"], "overflow": overflow}
        outputs = {"loss_sum": sums, "loss_count": counts, "weights": weights, "grad_norm": grad_norm,
                   "finite": finite, "stats": metric_stats(tasks, predictions, batch), **scaling}
        report = certificate.worst(weighting_state)  # the worst solver residual of this step's methods
        if report is not None:
            outputs["solver_residual"], outputs["solver_ratio"] = report["residual"], report["ratio"]
        if gramian is not None:
            outputs["gramian"] = gramian
        if penalty_value is not None:
            outputs["penalty"] = penalty_value
        return new_state, outputs

    return train_step


@functools.lru_cache(maxsize=64)
def make_eval_step(model: nn.Module, tasks: tuple[Task, ...], input_key: InputKey = "image"):
    """Returns the jitted ``eval_step(params, batch) -> outputs`` (loss sums/counts, metric stats)."""
    return jax.jit(eval_step_function(model, tasks, input_key))


@functools.lru_cache(maxsize=16)  # per mesh: evaluating twice compiles once
def make_placed_eval_step(model: nn.Module, tasks: tuple[Task, ...], input_key: InputKey, mesh):
    """:func:`make_eval_step` on a device mesh (batches split over its devices): the outputs
    (loss sums, metric statistics, per-example scores of ``concat`` metrics) are replicated, so
    every process can read them."""
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    return jax.jit(eval_step_function(model, tasks, input_key), out_shardings=replicated)


@functools.lru_cache(maxsize=16)
def make_seeds_eval_step(model: nn.Module, tasks: tuple[Task, ...], input_key: InputKey = "image"):
    """:func:`make_eval_step` for S runs' parameters stacked on a leading axis, on one shared
    batch: ``(params[S], batch) -> outputs[S]``."""
    return jax.jit(jax.vmap(eval_step_function(model, tasks, input_key), in_axes=(0, None)))


def eval_step_function(model: nn.Module, tasks: tuple[Task, ...], input_key: InputKey = "image"):
    """The pure, not yet compiled ``eval_step(params, batch) -> outputs``."""

    def eval_step(params, batch):
        predictions = model.apply({"params": params}, select_inputs(batch, input_key), train=False)
        _, sums, counts = task_losses(tasks, predictions, batch)
        return {"loss_sum": sums, "loss_count": counts, "stats": metric_stats(tasks, predictions, batch)}

    return eval_step


@functools.lru_cache(maxsize=64)
def make_predict_step(model: nn.Module):
    """Returns the jitted ``predict_step(params, inputs) -> {task: raw output}``."""
    return jax.jit(lambda params, inputs: model.apply({"params": params}, inputs, train=False))


@functools.lru_cache(maxsize=16)  # per mesh: evaluating twice compiles once
def make_placed_predict_step(model: nn.Module, mesh):
    """:func:`make_predict_step` on a device mesh (inputs split over its devices), its outputs
    replicated so every process can read them."""
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    return jax.jit(lambda params, inputs: model.apply({"params": params}, inputs, train=False),
                   out_shardings=replicated)
