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


def test_compiled_initialisation_equals_flax_init_up_to_rounding_and_is_deterministic():
    """init_params is model.init as one program: the same tree, the same values up to the last
    bit of a few entries, bitwise the same on every call, and usable inside a transformation."""
    import numpy as np

    from mtl_jax.models import SeedCNN
    from mtl_jax.train import init_params

    tasks = (mtl.regression("y"), mtl.classification("label", 3))
    images = np.random.default_rng(0).uniform(size=(2, 16, 16, 3)).astype(np.float32)
    for model, x in ((hard_sharing(SeedCNN((4, 8)), tasks), images),
                     (hard_sharing(MLP((16, 8)), tasks), toy_regression_classification(4)["x"])):
        key = jax.random.PRNGKey(7)
        compiled = init_params(model, key, x)
        eager = model.init({"params": key, "dropout": key}, x, train=False)["params"]
        chex.assert_trees_all_equal_structs(compiled, eager)
        chex.assert_trees_all_close(compiled, eager, rtol=1e-6, atol=1e-7)
        chex.assert_trees_all_equal(init_params(model, key, x), compiled)
        other = init_params(model, jax.random.PRNGKey(8), x)
        assert not any(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(compiled), jax.tree.leaves(other))
                       if np.any(a))  # biases start at zero whatever the key
        abstract = jax.eval_shape(lambda k: init_params(model, k, x), key)
        chex.assert_trees_all_equal_shapes_and_dtypes(abstract, compiled)
