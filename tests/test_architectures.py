"""Sharing architectures beyond hard sharing: the contract, their defining properties, training."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import assert_resumes_bitwise, jit_once, toy_regression_classification

import mtl_jax as mtl
from mtl_jax.experiment import make_weighting
from mtl_jax.models import param_labels
from mtl_jax.models.catalog import build_model
from mtl_jax.models.experts import gate_weights, mmoe, ple
from mtl_jax.models.mtan import mtan
from mtl_jax.models.sharing_penalties import SharingPenalty, make_penalty, nuclear_norm
from mtl_jax.models.soft_sharing import task_columns
from mtl_jax.models.trunks import MLP
from mtl_jax.tasks import task_losses
from mtl_jax.train import create_train_state, init_params, make_train_step
from mtl_jax.weighting import static

TASKS = (mtl.regression("y"), mtl.classification("label", 3), mtl.regression("z"))
IMAGE_TASKS = (mtl.regression("price"), mtl.segmentation("parts", 4))

VECTOR_MODELS = {
    "mmoe": lambda: mmoe(TASKS, num_experts=3, expert_features=(16,), tower_hidden=(8,)),
    "mmoe_encoder": lambda: mmoe(TASKS, num_experts=3, expert_features=(16,), encoder=MLP((12,))),
    "cgc": lambda: ple(TASKS, levels=1, expert_features=(16,)),
    "ple": lambda: ple(TASKS, levels=2, shared_experts=2, task_experts=1, expert_features=(16, 8)),
    "cross_stitch": lambda: task_columns(TASKS, features=(16, 8)),
    "columns": lambda: task_columns(TASKS, features=(16, 8), stitch=False),
}
IMAGE_MODELS = {
    "mtan": lambda: mtan(IMAGE_TASKS, features=(4, 8), output_size=(16, 16), pool="mean"),
    "cross_stitch_conv": lambda: task_columns(IMAGE_TASKS, features=(4, 8), layer="conv", output_size=(16, 16)),
}


def _vector_batch(n=12, seed=0):
    data = toy_regression_classification(n, seed=seed)
    data["z"] = (data["x"][:, 4] - data["x"][:, 5]).astype(np.float32)
    return data


def _image_batch(n=4, seed=0):
    rng = np.random.default_rng(seed)
    return {"x": rng.uniform(size=(n, 16, 16, 3)).astype(np.float32), "price": rng.normal(size=n).astype(np.float32),
            "parts": rng.integers(0, 4, (n, 16, 16)).astype(np.int32)}


def _all_models():
    return [(name, make, TASKS, _vector_batch) for name, make in VECTOR_MODELS.items()] + \
        [(name, make, IMAGE_TASKS, _image_batch) for name, make in IMAGE_MODELS.items()]


ALL = _all_models()
IDS = [name for name, *_ in ALL]
# the encoder and single-level variants differ only in where gradients flow: checked by the
# ownership and Gramian tests; the shape and training tests take the rest
MAIN = [case for case in ALL if case[0] not in ("mmoe_encoder", "cgc")]
MAIN_IDS = [name for name, *_ in MAIN]


def _init(model, batch):
    return init_params(model, jax.random.PRNGKey(0), batch["x"][:2])


@pytest.mark.parametrize("name,make,tasks,make_batch", MAIN, ids=MAIN_IDS)
def test_outputs_have_each_tasks_shape_and_the_contract_holds(name, make, tasks, make_batch):
    model, batch = make(), make_batch()
    params = _init(model, batch)

    @jit_once
    def both_ways(p, x):
        z = model.apply({"params": p}, x, method="represent")
        return model.apply({"params": p}, x), model.apply({"params": p}, {t.name: z for t in tasks},
                                                          method="predict_from")

    out, again = both_ways(params, batch["x"])
    n = len(batch["x"])
    expected = {t.name: (n, 16, 16, t.output_dim) if t.dense else (n, t.output_dim) for t in tasks}
    chex.assert_trees_all_equal_shapes(out, {k: jnp.zeros(s) for k, s in expected.items()})
    chex.assert_trees_all_close(again, out, atol=1e-5)
    assert set(jax.tree.leaves(param_labels(model, params))) == {"shared", *[t.name for t in tasks]}


def _task_jacobian(model, tasks, params, batch):
    """Every task's gradient w.r.t. every parameter (leaves ``[T, ...]``), one compiled program."""
    def losses(p):
        return task_losses(tasks, model.apply({"params": p}, batch["x"], train=True), batch)[0]

    return jit_once(jax.jacrev(losses))(params)  # op by op it takes ~10 s of dispatches


@pytest.mark.parametrize("name,make,tasks,make_batch", ALL, ids=IDS)
def test_task_parameters_move_only_their_task_and_the_parameter_level_step_is_exact(name, make, tasks, make_batch):
    """From every task's full gradient (the Jacobian of the losses w.r.t. all parameters):

    * the contract behind every gradient method: a task-owned parameter does not move other
      losses (and moves its own);
    * the parameter-level step's Gramian is that of the shared parameters' gradients, and MGDA's
      update moves the shared parameters by exactly ``-sum_i w_i grad L_i``.
    """
    model, batch = make(), make_batch()
    weighting = make_weighting("equal", tasks, {}, steps_per_epoch=1, aggregator="mgda", level="parameter")
    state = create_train_state(model, tasks, optax.sgd(1.0), weighting, batch["x"][:2])
    params = jax.tree.map(jnp.copy, state.params)
    jacobian = _task_jacobian(model, tasks, params, batch)
    labels = param_labels(model, params)
    for index, task in enumerate(tasks):
        moved = jax.tree.map(lambda g, owner: (owner, float(jnp.abs(g[index]).max())), jacobian, labels,
                             is_leaf=lambda x: isinstance(x, str))
        for owner, size in jax.tree.leaves(moved, is_leaf=lambda x: isinstance(x, tuple)):
            if owner not in ("shared", task.name):
                assert size == 0.0, f"{name}: {owner}'s parameters move {task.name}'s loss"
        assert max(size for owner, size in jax.tree.leaves(moved, is_leaf=lambda x: isinstance(x, tuple))
                   if owner == task.name) > 0.0

    new_state, out = make_train_step(model, tasks, optax.sgd(1.0), weighting, "x")(state, batch)
    shared = {k: v for k, v in jacobian.items() if model.param_owner(k) == "shared"}
    flat = jnp.concatenate([leaf.reshape(len(tasks), -1) for leaf in jax.tree.leaves(shared)], axis=1)
    reference = np.asarray(flat @ flat.T, np.float64)
    np.testing.assert_allclose(np.asarray(out["gramian"]), reference, rtol=2e-4, atol=1e-6 * np.abs(reference).max())
    weights = out["weights"]
    for key in shared:  # shared parameters moved by -sum_i w_i grad L_i
        expected = jax.tree.map(lambda p, j: p - jnp.tensordot(weights, j, axes=1), params[key], shared[key])
        chex.assert_trees_all_close(new_state.params[key], expected, rtol=2e-4, atol=2e-6)


@pytest.mark.parametrize("name,make,tasks,make_batch", MAIN, ids=MAIN_IDS)
def test_every_architecture_trains_with_loss_weighting_composed_with_aggregation(name, make, tasks, make_batch):
    """Uncertainty weighting, then PCGrad at the feature level, in one step (the parameter level:
    MGDA in the test above)."""
    model, batch = make(), make_batch()
    weighting = make_weighting("uw", tasks, {}, steps_per_epoch=1, aggregator="pcgrad", level="feature")
    step = make_train_step(model, tasks, optax.adam(1e-2), weighting, "x")
    state = create_train_state(model, tasks, optax.adam(1e-2), weighting, batch["x"][:2])
    for _ in range(3):
        state, out = step(state, batch)
        assert bool(out["finite"])
        assert out["gramian"].shape == (len(tasks), len(tasks))
    assert step._cache_size() == 1


@pytest.mark.parametrize("name", list(VECTOR_MODELS))
def test_every_vector_architecture_learns_a_small_problem(name):
    data = _vector_batch(n=256, seed=1)
    model = VECTOR_MODELS[name]()
    history = mtl.fit(model, TASKS, data, epochs=20, batch_size=64, input_key="x", progress=False,
                      optimizer=optax.adam(1e-2)).history
    for task in ("y", "label", "z"):
        losses = history[f"train/{task}/loss"]
        assert losses[-1] < 0.4 * losses[0], (name, task, losses[0], losses[-1])
    assert history["train/label/accuracy"][-1] > 0.85


@pytest.mark.long
def test_mtan_learns_global_and_per_pixel_tasks(tiny_houses):
    tasks = (mtl.regression("price"), mtl.segmentation("parts", 4))
    model = build_model("none", tasks, architecture="mtan", architecture_kwargs={"features": (8, 16)},
                        pool="mean", output_size=(64, 64))
    history = mtl.fit(model, tasks, tiny_houses["train"], epochs=4, batch_size=32, input_key="image",
                      progress=False, optimizer=optax.adam(3e-3)).history
    assert history["train/parts/loss"][-1] < 0.8 * history["train/parts/loss"][0]  # measured 0.72
    assert history["train/price/loss"][-1] < 0.8 * history["train/price/loss"][0]  # 0.61


def test_gates_are_distributions_over_experts():
    batch = _vector_batch()
    for model in (VECTOR_MODELS["mmoe"](), VECTOR_MODELS["ple"]()):
        gates = gate_weights(model, _init(model, batch), batch["x"])
        assert {f"gate_{t.name}" for t in TASKS} <= set(gates)
        for weights in jax.tree.leaves(gates):
            assert (np.asarray(weights) >= 0).all()
            np.testing.assert_allclose(np.asarray(weights).sum(-1), 1.0, rtol=1e-6)
    ple_gates = gate_weights(VECTOR_MODELS["ple"](), _init(VECTOR_MODELS["ple"](), batch), batch["x"])
    chex.assert_shape(ple_gates["level0_gates"]["tasks"], (12, 3, 1 + 2))  # own expert + 2 shared
    chex.assert_shape(ple_gates["level0_gates"]["shared"], (12, 3 * 1 + 2))  # every expert of the level


def test_cross_stitch_initialised_to_identity_is_independent_task_networks():
    batch = _vector_batch()
    stitched = task_columns(TASKS, features=(16, 8), self_weight=1.0)
    params = _init(stitched, batch)
    base = stitched.apply({"params": params}, batch["x"])
    moved = jax.tree.map(lambda leaf: leaf.at[1].add(0.5), params["columns"])  # change column 1 only
    out = stitched.apply({"params": {**params, "columns": moved}}, batch["x"])
    np.testing.assert_array_equal(out["y"], base["y"])
    np.testing.assert_array_equal(out["z"], base["z"])
    assert not np.allclose(out["label"], base["label"])
    # and it equals the unstitched columns with the same parameters
    columns = task_columns(TASKS, features=(16, 8), stitch=False)
    plain = columns.apply({"params": {k: v for k, v in params.items() if not k.startswith("stitch_")}}, batch["x"])
    chex.assert_trees_all_close(plain, base, atol=1e-6)
    # while the default 0.9 / 0.05 units mix the columns from the start
    mixed = task_columns(TASKS, features=(16, 8))
    mixed_params = _init(mixed, batch)
    before = mixed.apply({"params": mixed_params}, batch["x"])
    moved = jax.tree.map(lambda leaf: leaf.at[1].add(0.5), mixed_params["columns"])
    after = mixed.apply({"params": {**mixed_params, "columns": moved}}, batch["x"])
    assert not np.allclose(after["y"], before["y"])
    np.testing.assert_allclose(np.asarray(mixed_params["stitch_0"]).sum(1), 1.0, rtol=1e-6)


def _stacked_columns(seed=0, equal=False):
    rng = np.random.default_rng(seed)
    kernel = rng.normal(size=(3, 4, 5)).astype(np.float32)
    bias = rng.normal(size=(3, 5)).astype(np.float32)
    if equal:
        kernel, bias = np.broadcast_to(kernel[:1], kernel.shape), np.broadcast_to(bias[:1], bias.shape)
    return {"columns": {"stages_0": {"kernel": jnp.asarray(kernel), "bias": jnp.asarray(bias)}}}


def test_l2_penalty_is_the_pairwise_distance_zero_for_equal_columns_and_pulls_them_together():
    penalty = SharingPenalty("l2", 0.5)
    params = _stacked_columns()
    leaves = [np.asarray(leaf).reshape(3, -1) for leaf in jax.tree.leaves(params["columns"])]
    pairwise = sum(np.sum((m[i] - m[j]) ** 2) for m in leaves for i in range(3) for j in range(i + 1, 3))
    np.testing.assert_allclose(float(penalty(params)), 0.5 * pairwise, rtol=1e-5)
    assert float(penalty(_stacked_columns(equal=True))) == 0.0
    grads = jax.grad(penalty)(params)
    stepped = jax.tree.map(lambda p, g: p - 0.1 * g, params, grads)
    assert float(penalty(stepped)) < float(penalty(params))
    spread = lambda p: np.asarray(p["columns"]["stages_0"]["kernel"]).std(axis=0).sum()  # noqa: E731
    assert spread(stepped) < spread(params)
    np.testing.assert_allclose(np.asarray(jax.tree.leaves(jax.grad(penalty)(_stacked_columns(equal=True)))[0]), 0.0)


def test_trace_norm_is_the_sum_of_singular_values_with_a_finite_subgradient():
    penalty = SharingPenalty("trace_norm", 1.0)
    params = _stacked_columns()
    expected = sum(np.linalg.svd(np.asarray(leaf).reshape(3, -1), compute_uv=False).sum()
                   for leaf in jax.tree.leaves(params["columns"]))
    np.testing.assert_allclose(float(penalty(params)), expected, rtol=1e-5)
    equal = _stacked_columns(equal=True)  # rank one: the nuclear norm is the Frobenius norm
    frobenius = sum(np.linalg.norm(np.asarray(leaf)) for leaf in jax.tree.leaves(equal["columns"]))
    np.testing.assert_allclose(float(penalty(equal)), frobenius, rtol=1e-5)
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(jax.grad(penalty)(equal)))
    # a step on the trace norm shrinks the weaker directions more, relatively, than the main one
    matrix = jnp.asarray(np.random.default_rng(3).normal(size=(3, 12)).astype(np.float32))
    stepped = matrix - 0.2 * jax.grad(nuclear_norm)(matrix)
    before, after = np.linalg.svd(matrix, compute_uv=False), np.linalg.svd(stepped, compute_uv=False)
    assert after[-1] / after[0] < before[-1] / before[0]


def test_penalty_enters_the_step_as_an_added_gradient_and_is_logged():
    tasks = TASKS[:2]
    batch = _vector_batch()
    model = task_columns(tasks, features=(8,), stitch=False)
    penalty = make_penalty("l2", 0.3)
    weighting = static((1.0, 0.5))
    state = create_train_state(model, tasks, optax.sgd(1.0), weighting, batch["x"][:2])
    params = jax.tree.map(jnp.copy, state.params)
    new_state, out = make_train_step(model, tasks, optax.sgd(1.0), weighting, "x", penalty)(state, batch)

    def total(p):
        losses = task_losses(tasks, model.apply({"params": p}, batch["x"], train=True), batch)[0]
        return losses[0] + 0.5 * losses[1] + penalty(p)

    expected = jax.tree.map(lambda p, g: p - g, params, jit_once(jax.grad(total))(params))
    chex.assert_trees_all_close(new_state.params, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(out["penalty"]), float(penalty(params)), rtol=1e-6)
    with pytest.raises(KeyError, match="columns"):
        penalty({"trunk": {}})
    assert make_penalty("none", 1.0) is None and make_penalty("l2", 0.0) is None
    with pytest.raises(ValueError, match="penalty"):
        make_penalty("l1", 1.0)


def test_architecture_errors_name_the_problem():
    with pytest.raises(ValueError, match="model='none'"):
        build_model("mlp", TASKS, architecture="mtan")
    with pytest.raises(ValueError, match="needs a trunk"):
        build_model("none", TASKS, architecture="hard")
    with pytest.raises(ValueError, match="architecture_kwargs"):
        build_model("none", TASKS, architecture="mmoe", architecture_kwargs={"experts": 3})
    with pytest.raises(KeyError, match="unknown architecture"):
        build_model("none", TASKS, architecture="sluice")
    with pytest.raises(ValueError, match="per pixel"):
        mmoe(IMAGE_TASKS)


@pytest.mark.parametrize("name", ["cross_stitch"])
def test_architectures_checkpoint_and_resume_bitwise(name, tmp_path):
    assert_resumes_bitwise(VECTOR_MODELS[name](), TASKS, _vector_batch(n=40, seed=2), tmp_path)
