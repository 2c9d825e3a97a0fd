"""The train state is one pytree of arrays: it round-trips through an orbax checkpoint."""
import chex
import jax
import optax
import orbax.checkpoint as ocp

import mtl_jax as mtl
from mtl_jax.data import batches
from mtl_jax.models import MLP, hard_sharing
from mtl_jax.train import create_train_state, make_train_step
from mtl_jax.weighting import static

from conftest import toy_regression_classification


def test_train_state_round_trips_through_orbax_and_training_continues_identically(tmp_path):
    data = toy_regression_classification(32)
    tasks = (mtl.regression("y"), mtl.classification("label", 3, weight=0.5))
    model, opt, weighting = hard_sharing(MLP((16,)), tasks), optax.adam(1e-2), static([1.0, 0.5])
    step = make_train_step(model, tasks, opt, weighting, "x")
    state = create_train_state(model, tasks, opt, weighting, data["x"][:2], seed=0)
    first, second = list(batches(data, 16, seed=0))
    state, _ = step(state, first)

    with ocp.CheckpointManager(tmp_path / "ckpt") as manager:
        manager.save(1, args=ocp.args.StandardSave(state))
        manager.wait_until_finished()
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
        restored = manager.restore(1, args=ocp.args.StandardRestore(abstract))
    chex.assert_trees_all_equal(jax.device_get(restored), jax.device_get(state))

    continued, _ = step(restored, second)
    expected, _ = step(state, second)
    chex.assert_trees_all_equal(jax.device_get(continued.params), jax.device_get(expected.params))
    assert int(continued.step) == 2
