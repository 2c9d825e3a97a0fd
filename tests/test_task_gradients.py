"""The gradient engine: exact Gramians at both levels, and the update they lead to."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mtl_jax as mtl
from mtl_jax.aggregation import mgda
from mtl_jax.experiment import make_weighting
from mtl_jax.models import SeedCNN, hard_sharing
from mtl_jax.tasks import task_losses
from mtl_jax.train import create_train_state, make_train_step
from mtl_jax.train import parameter_gramian as pg
from mtl_jax.weighting import static
from mtl_jax.balancing import Method, at_level, chain, observed

from conftest import jit_once


class MixedTrunk(nn.Module):
    """Every kind of shared layer the engine meets: strided SAME conv with bias, VALID conv
    without, a normalisation layer (general parameters), dense layers."""

    @nn.compact
    def __call__(self, x, train=False):
        x = nn.relu(nn.Conv(4, (3, 3), strides=2, padding="SAME")(x))
        x = nn.Conv(5, (2, 2), padding="VALID", use_bias=False, kernel_dilation=1)(x)
        x = nn.LayerNorm()(x)
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(16)(x))
        return nn.Dense(8)(x)


class LinearTrunk(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
        return nn.Dense(6, use_bias=False)(x)


class TiedTrunk(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
        layer = nn.Dense(x.shape[-1])
        return layer(nn.relu(layer(x)))


def _tasks(count):
    return tuple(mtl.regression(f"r{i}") for i in range(count - 1)) + (mtl.classification("c", 3),)


def _batch(tasks, shape, seed=0, size=6):
    rng = np.random.default_rng(seed)
    batch = {"x": rng.normal(size=(size, *shape)).astype(np.float32)}
    for task in tasks:
        batch[task.name] = rng.integers(0, 3, size).astype(np.int32) if task.name == "c" else \
            rng.normal(size=size).astype(np.float32)
    return batch


def _reference_gramian(model, tasks, params, batch):
    def losses(shared):
        return task_losses(tasks, model.apply({"params": {**params, "trunk": shared}}, batch["x"], train=True),
                           batch)[0]

    jacobian = jit_once(jax.jacrev(losses))(params["trunk"])
    flat = jnp.concatenate([leaf.reshape(len(tasks), -1) for leaf in jax.tree.leaves(jacobian)], axis=1)
    return np.asarray(flat @ flat.T, np.float64)


def _step_outputs(model, tasks, weighting, batch, optimizer=optax.sgd(1.0)):
    state = create_train_state(model, tasks, optimizer, weighting, batch["x"][:2])
    params = jax.tree.map(jnp.copy, state.params)
    new_state, out = make_train_step(model, tasks, optimizer, weighting, "x")(state, batch)
    return params, new_state, out


@pytest.mark.parametrize("num_tasks", [1, 3, 11])  # 11 > TASK_CHUNK: signals come from two backward passes
@pytest.mark.parametrize("kernel_trick", [True, False])
def test_parameter_gramian_equals_the_full_jacobians_gramian(num_tasks, kernel_trick, monkeypatch):
    monkeypatch.setattr(pg, "GRAM_MAX_ROWS", 4096 if kernel_trick else 0)
    tasks = _tasks(num_tasks)
    model = hard_sharing(MixedTrunk(), tasks)
    batch = _batch(tasks, (8, 8, 3))
    params, _, out = _step_outputs(model, tasks, observed(static((1.0,) * num_tasks), "parameter"), batch)
    expected = _reference_gramian(model, tasks, params, batch)
    np.testing.assert_allclose(np.asarray(out["gramian"]), expected, rtol=2e-4, atol=2e-5 * np.abs(expected).max())


def test_parameter_gramian_of_the_seed_cnn_with_its_fast_cpu_convolution():
    tasks = _tasks(3)
    model = hard_sharing(SeedCNN(features=(4, 6), conv="fast"), tasks)
    batch = _batch(tasks, (16, 16, 3), size=4)
    batch["x"] = (np.abs(batch["x"]) * 60).astype(np.uint8)
    params, _, out = _step_outputs(model, tasks, observed(static((1.0,) * 3), "parameter"), batch)
    expected = _reference_gramian(model, tasks, params, batch)
    np.testing.assert_allclose(np.asarray(out["gramian"]), expected, rtol=2e-4, atol=2e-5 * np.abs(expected).max())


@pytest.mark.parametrize("level", ["feature", "parameter"])
def test_the_update_is_the_gradient_of_the_weighted_sum_of_losses(level):
    tasks = _tasks(3)
    model = hard_sharing(MixedTrunk(), tasks)
    batch = _batch(tasks, (8, 8, 3), seed=3)
    weighting = at_level(chain(static((1.0, 2.0, 0.5)), mgda()), level)
    params, new_state, out = _step_outputs(model, tasks, weighting, batch)
    weights = out["weights"]

    def total(p):
        losses = task_losses(tasks, model.apply({"params": p}, batch["x"], train=True), batch)[0]
        return jnp.sum(weights * losses)

    expected = jit_once(jax.grad(total))(params)  # heads get their own task's weighted gradient, the trunk the sum
    taken = jax.tree.map(lambda old, new: old - new, params, new_state.params)  # sgd(1.0)
    for path, value in jax.tree_util.tree_leaves_with_path(jax.tree.map(
            lambda a, b: float(jnp.max(jnp.abs(a - b)) / (jnp.max(jnp.abs(b)) + 1e-6)), taken, expected)):
        assert value < 1e-4, path


def test_feature_and_parameter_levels_agree_on_a_single_linear_layer_with_orthonormal_inputs():
    # z = x W: the parameter gradient of task i is x^T d_i, so G_param = d_i^T (x x^T) d_j = G_feature when x x^T = I
    tasks = _tasks(4)
    model = hard_sharing(LinearTrunk(), tasks)
    batch = _batch(tasks, (10,), seed=5)
    batch["x"] = np.linalg.qr(np.random.default_rng(1).normal(size=(10, 6)))[0].T.astype(np.float32)  # 6 x 10
    feature = _step_outputs(model, tasks, at_level(chain(static((1.0,) * 4), mgda()), "feature"), batch)[2]
    parameter = _step_outputs(model, tasks, at_level(chain(static((1.0,) * 4), mgda()), "parameter"), batch)[2]
    np.testing.assert_allclose(parameter["gramian"], feature["gramian"], rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(parameter["weights"], feature["weights"], rtol=1e-3, atol=1e-5)


def test_a_layer_called_twice_is_refused_at_the_parameter_level():
    tasks = _tasks(2)
    model = hard_sharing(TiedTrunk(), tasks)
    batch = _batch(tasks, (5,))
    with pytest.raises(ValueError, match="called 2 times"):
        _step_outputs(model, tasks, observed(static((1.0, 1.0)), "parameter"), batch)
    out = _step_outputs(model, tasks, observed(static((1.0, 1.0)), "feature"), batch)[2]
    assert np.isfinite(np.asarray(out["gramian"])).all()


def test_describe_says_how_each_shared_tensor_enters_the_gramian():
    tasks = _tasks(2)
    model = hard_sharing(MixedTrunk(), tasks)
    batch = _batch(tasks, (8, 8, 3))
    params = model.init(jax.random.PRNGKey(0), batch["x"])["params"]
    taps = pg.find_taps(model, params, batch["x"])
    kinds = pg.describe(taps, {"trunk": params["trunk"]})
    assert kinds["trunk/Conv_0/kernel"] == "general" and kinds["trunk/Dense_0/kernel"] == "dense"
    assert kinds["trunk/Dense_1/bias"] == "dense" and kinds["trunk/LayerNorm_0/scale"] == "general"


def test_levels_move_gramian_methods_and_leave_loss_only_methods_alone():
    loss_only = static((1.0, 1.0))
    assert at_level(loss_only, "parameter") is loss_only
    moved = at_level(mtl.chain(loss_only, mgda()), "parameter")
    assert moved.needs == "parameter_gramian"
    assert observed(loss_only, "parameter").needs == "parameter_gramian"
    with pytest.raises(ValueError, match="gradient level"):
        at_level(moved, "pixels")


def test_the_parameter_level_step_compiles_once():
    tasks = _tasks(3)
    model = hard_sharing(MixedTrunk(), tasks)
    weighting = at_level(chain(static((1.0,) * 3), mgda()), "parameter")
    optimizer = optax.adam(1e-3)
    state = create_train_state(model, tasks, optimizer, weighting, _batch(tasks, (8, 8, 3))["x"][:2])
    step = make_train_step(model, tasks, optimizer, weighting, "x")
    for seed in range(3):
        state, out = step(state, _batch(tasks, (8, 8, 3), seed=seed))
    assert step._cache_size() == 1 and bool(out["finite"])


def test_a_model_without_the_sharing_contract_gets_a_clear_error():
    class Plain(nn.Module):
        @nn.compact
        def __call__(self, x, train=False):
            return {"r0": nn.Dense(1)(x)[:, 0]}

    tasks = (mtl.regression("r0"),)
    weighting = Method(lambda n: (), lambda info, state, key: (jnp.ones(1), state), "parameter_gramian")
    with pytest.raises(TypeError, match="represent"):
        make_train_step(Plain(), tasks, optax.sgd(0.1), weighting, "x")


@pytest.mark.parametrize("name", ["gradnorm", "db_mtl"])
def test_gradient_norm_weightings_run_at_the_parameter_level(name):
    tasks = _tasks(3)
    model = hard_sharing(MixedTrunk(), tasks)
    batch = _batch(tasks, (8, 8, 3), seed=2)
    weighting = make_weighting(name, tasks, {}, steps_per_epoch=4, level="parameter")
    assert weighting.needs == "parameter_gramian"
    params, _, out = _step_outputs(model, tasks, weighting, batch, optax.adam(1e-3))
    np.testing.assert_allclose(np.asarray(out["gramian"]), _reference_gramian(model, tasks, params, batch),
                               rtol=2e-4, atol=1e-5 * float(np.abs(out["gramian"]).max()))
    assert np.isfinite(np.asarray(out["weights"])).all()
