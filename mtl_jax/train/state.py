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

from mtl_jax.tasks import Task
from mtl_jax.balancing import Method


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any
    weighting_state: Any
    rng: jax.Array


def create_train_state(model: nn.Module, tasks: Sequence[Task], optimizer: optax.GradientTransformation,
                       weighting: Method, example_inputs: Any, seed: int = 0) -> TrainState:
    """Initialises parameters from ``example_inputs`` (a batch of inputs, any batch size)."""
    init_key, run_key = jax.random.split(jax.random.PRNGKey(seed))
    params = model.init({"params": init_key, "dropout": init_key}, example_inputs, train=False)["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params),
                      weighting_state=_distinct_buffers(weighting.init(len(tasks))), rng=run_key)


def _distinct_buffers(tree):
    """Copies every leaf: a state may not hold one buffer twice, as the step donates it."""
    return jax.tree.map(lambda leaf: jnp.array(leaf, copy=True), tree)
