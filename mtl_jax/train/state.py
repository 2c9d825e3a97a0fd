"""The train state: one pytree holding everything a step reads and writes.

Static things (the model, the optimizer's functions, the tasks) live in the step's
closure, not here, so the state is plain arrays: it checkpoints with orbax and shards
with ``jax.sharding`` as is. ``rng`` is the run's base key; step ``k`` uses
``fold_in(rng, k)``, so randomness depends only on the seed and the step number.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax

from mtl_jax.models.mixed_precision import initial_loss_scale
from mtl_jax.tasks import Task
from mtl_jax.balancing import Method


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any
    weighting_state: Any
    rng: jax.Array
    # a float16 model's dynamic loss scale ({"scale", "good_steps"}; mtl_jax.models.mixed_precision);
    # None (no arrays: the checkpoint is unchanged) for every other model
    loss_scale: Any = None


def create_train_state(model: nn.Module, tasks: Sequence[Task], optimizer: optax.GradientTransformation,
                       weighting: Method, example_inputs: Any, seed: int = 0) -> TrainState:
    """Initialises parameters from ``example_inputs`` (a batch of inputs, any batch size)."""
    init_key, run_key = jax.random.split(jax.random.PRNGKey(seed))
    params = init_params(model, init_key, example_inputs)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params),
                      weighting_state=_distinct_buffers(weighting.init(len(tasks))), rng=run_key,
                      loss_scale=initial_loss_scale(model))


def init_params(model: nn.Module, key: jax.Array, example_inputs: Any) -> Any:
    """``model.init(...)["params"]`` as one compiled program (``key`` seeds the parameters and
    any dropout met on the way).

    Run op by op, as ``model.init`` is, initialisation dispatches every initialiser's
    random-number ops one at a time (3-8 s for the project's models on a CPU); compiled as one
    program it is one dispatch. The program runs once, so on a CPU it is compiled without
    LLVM's optimisations (``xla_backend_optimization_level=0``): the threefry random-bit code
    otherwise takes 5-6 s of the compile. Its values equal the op-by-op ones up to
    floating-point rounding (a few parameters differ by one unit in the last place).
    """
    def init(key, inputs):
        return model.init({"params": key, "dropout": key}, inputs, train=False)["params"]

    if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves((key, example_inputs))):
        return init(key, example_inputs)  # inside a transformation (e.g. jax.eval_shape of a state)
    return jax.jit(init, compiler_options=run_once_compiler_options())(key, example_inputs)


def run_once_compiler_options() -> dict | None:
    """XLA options for a program that runs once (initialisation): on a CPU, no LLVM optimisation."""
    return {"xla_backend_optimization_level": 0} if jax.default_backend() == "cpu" else None


def _distinct_buffers(tree):
    """Copies every leaf: a state may not hold one buffer twice, as the step donates it."""
    return jax.tree.map(lambda leaf: jnp.array(leaf, copy=True), tree)
