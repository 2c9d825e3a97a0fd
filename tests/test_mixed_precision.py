"""Mixed precision (mtl_jax/models/mixed_precision.py): every architecture and trunk computes its
products in the reduced dtype on float32 parameters and returns float32; gradients reach the
float32 state unscaled; float16 loss scaling rescues gradients that float16 flushes to zero;
a dynamic loss scale halves on overflow (applying nothing), doubles when stable, trains and
resumes bitwise; both gradient levels train; a run records its precision and refuses to resume
in another."""
import importlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import assert_resumes_bitwise, toy_regression_classification
from test_architectures import ALL

import mtl_jax as mtl
from mtl_jax.experiment import make_weighting
from mtl_jax.models import MLP, FieldEmbedding, ResNet, SeedCNN, TextEncoder, hard_sharing, mixed_precision
from mtl_jax.data.batching import batches
from mtl_jax.models.mixed_precision import check_precision, precision_of
from mtl_jax.train.state import create_train_state
from mtl_jax.train.step import make_train_step
from mtl_jax.weighting import static
from mtl_jax.train.run_workdir import run_signature, signature_mismatch

mp = importlib.import_module("mtl_jax.models.mixed_precision")  # the module (the package exports the function)
TASKS = (mtl.regression("y"), mtl.classification("label", 3))
PRODUCTS = ("dot_general", "conv_general_dilated")


def _products(jaxpr):
    """Every matrix product and convolution of a jaxpr, nested calls included."""
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in PRODUCTS:
            yield eqn
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    yield from _products(inner)


def _trunk_models():
    image = np.zeros((2, 16, 16, 3), np.uint8)
    return [("seed_cnn", hard_sharing(SeedCNN(), TASKS), image),
            ("resnet", hard_sharing(ResNet(stage_sizes=(1, 1), widths=(4, 8)), TASKS), image.astype(np.float32)),
            ("text", hard_sharing(TextEncoder(vocab_size=20, embed_dim=8, layers=1, num_heads=2, mlp_dim=8), TASKS),
             np.ones((2, 5), np.int32)),
            ("fields", hard_sharing(FieldEmbedding((5, 7), embed_dim=4, features=(8,)), TASKS),
             np.ones((2, 2), np.int32)),
            ("mlp_counts", hard_sharing(MLP((8,)), TASKS), np.ones((2, 6), np.int32))]


def _cases():
    cases = [(name, make(), batch(2)["x"]) for name, make, _, batch in ALL]
    return cases + _trunk_models()


@pytest.mark.parametrize("name,model,inputs", _cases(), ids=[c[0] for c in _cases()])
def test_every_model_multiplies_in_bfloat16_on_float32_parameters_and_returns_float32(name, model, inputs):
    params = jax.eval_shape(lambda: model.init({"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(0)},
                                               inputs)["params"])
    wrapped = mixed_precision(model, "bfloat16")
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(params))
    traced = jax.make_jaxpr(lambda p: wrapped.apply({"params": p}, inputs, train=True,
                                                    rngs={"dropout": jax.random.PRNGKey(1)}))(params)
    products = list(_products(traced.jaxpr))
    assert products, name
    dtypes = {str(v.aval.dtype) for eqn in products for v in eqn.invars}
    assert dtypes == {"bfloat16"}, (name, dtypes)
    assert {str(v.aval.dtype) for v in traced.jaxpr.outvars} == {"float32"}


def test_gradients_reach_float32_parameters_close_to_the_float32_ones():
    data = toy_regression_classification(64)
    model = hard_sharing(MLP((32,)), TASKS)
    params = model.init(jax.random.PRNGKey(0), data["x"])["params"]

    def loss(p, m):
        out = m.apply({"params": p}, data["x"])
        return jnp.mean((out["y"][:, 0] - data["y"]) ** 2) + optax.softmax_cross_entropy_with_integer_labels(
            out["label"], data["label"]).mean()

    gradient = jax.jit(jax.grad(loss), static_argnums=1)
    reference = gradient(params, model)
    for precision, tolerance in (("bfloat16", 6e-2), ("float16", 6e-3)):
        grads = gradient(params, mixed_precision(model, precision))
        chex.assert_trees_all_equal_dtypes(grads, reference)
        for g, r in zip(jax.tree.leaves(grads), jax.tree.leaves(reference)):
            assert jnp.max(jnp.abs(g - r)) <= tolerance * jnp.max(jnp.abs(r)), precision
        assert not jax.tree.all(jax.tree.map(lambda g, r: bool(jnp.all(g == r)), grads, reference))


def test_float16_loss_scaling_keeps_gradients_that_float16_flushes_to_zero():
    """A loss whose gradients are ~1e-9: float16 (smallest subnormal 6e-8) flushes them to zero;
    with loss_scale 2^20 they are computed at ~1e-3 and come back unscaled, matching float32."""
    data = toy_regression_classification(32)
    model = hard_sharing(MLP((16,)), TASKS)
    params = model.init(jax.random.PRNGKey(0), data["x"])["params"]

    def loss(p, m):
        return 1e-9 * jnp.sum(m.apply({"params": p}, data["x"])["y"] ** 2)

    gradient = jax.jit(jax.grad(loss), static_argnums=1)
    reference = gradient(params, model)["trunk"]
    flushed = gradient(params, mixed_precision(model, "float16"))["trunk"]
    scaled = gradient(params, mixed_precision(model, "float16", loss_scale=2.0 ** 20))["trunk"]
    assert all(float(jnp.max(jnp.abs(g))) == 0.0 for g in jax.tree.leaves(flushed))
    for g, r in zip(jax.tree.leaves(scaled), jax.tree.leaves(reference)):
        assert float(jnp.max(jnp.abs(r))) > 0
        np.testing.assert_allclose(g, r, rtol=0.02, atol=0.02 * float(jnp.max(jnp.abs(r))))


def test_a_dynamic_loss_scale_halves_on_overflow_and_doubles_after_a_stable_interval(monkeypatch):
    monkeypatch.setattr(mp, "GROWTH_INTERVAL", 3)
    state = {"scale": jnp.float32(8.0), "good_steps": jnp.int32(0)}
    seen = []
    for finite in (False, True, True, True, True, False, False, False, False, True):
        state, overflow = mp.next_loss_scale(state, jnp.bool_(finite))
        seen.append((float(state["scale"]), int(state["good_steps"]), bool(overflow)))
    assert seen == [(4, 0, True), (4, 1, False), (4, 2, False), (8, 0, False), (8, 1, False),
                    (4, 0, True), (2, 0, True), (1, 0, True), (1, 0, False), (1, 1, False)]  # at 1: no overflow


def _loud_data():
    """Targets 300x the usual: float16's scaled gradients overflow at the initial scale 2^15."""
    data = toy_regression_classification(40)
    return {**data, "y": data["y"] * 300.0}


def test_a_dynamic_loss_scale_overflow_applies_nothing_and_the_run_finds_its_scale(tmp_path):
    data = _loud_data()
    model = mixed_precision(hard_sharing(MLP((16,)), TASKS), "float16", "dynamic")
    assert precision_of(model) == "float16 (dynamic loss scale)"
    weighting, optimizer = static([1.0, 1.0]), optax.adam(1e-2)
    state = create_train_state(model, TASKS, optimizer, weighting, data["x"][:8])
    assert float(state.loss_scale["scale"]) == mp.INITIAL_SCALE
    before = jax.device_get(state)
    after, out = make_train_step(model, TASKS, optimizer, weighting, "x")(state, next(batches(data, 8)))
    assert bool(out["overflow"]) and bool(out["finite"]) and float(out["loss_scale"]) == mp.INITIAL_SCALE
    chex.assert_trees_all_equal(after.params, before.params)  # nothing applied
    chex.assert_trees_all_equal(after.opt_state, before.opt_state)
    assert float(after.loss_scale["scale"]) == mp.INITIAL_SCALE / 2 and int(after.step) == 1
    # a run halves until the scaled gradients fit, then trains: no non-finite step raised
    run = mtl.fit(model, TASKS, data, epochs=3, batch_size=8, input_key="x", weighting=weighting,
                  optimizer=optimizer, progress=False)
    overflows = sum(run.history["train/overflow_steps"])
    assert 1 <= overflows < 15 and float(run.state.loss_scale["scale"]) == mp.INITIAL_SCALE / 2 ** overflows
    assert run.history["train/y/loss"][-1] < run.history["train/y/loss"][0]
    assert jax.tree.all(jax.tree.map(lambda p: bool(jnp.all(jnp.isfinite(p))), run.state.params))
    assert_resumes_bitwise(model, TASKS, data, tmp_path, weighting=weighting)  # the scale is checkpointed


@pytest.mark.parametrize("level", ["feature", "parameter"])
def test_a_gradient_method_trains_in_bfloat16_at_each_level_close_to_float32(level):
    """UPGrad at each gradient level: the state stays float32, the Gramian the method sees is
    float32, and two epochs end near the float32 losses and parameters."""
    data = toy_regression_classification(64)
    model = hard_sharing(MLP((32,)), TASKS)
    weighting = make_weighting("equal", TASKS, {}, steps_per_epoch=4, aggregator="upgrad", level=level)
    runs = {precision: mtl.fit(mixed_precision(model, precision), TASKS, data, epochs=2, batch_size=16,
                               input_key="x", weighting=weighting, optimizer=optax.adam(1e-2), progress=False)
            for precision in ("float32", "bfloat16")}
    chex.assert_trees_all_equal_dtypes(runs["bfloat16"].state, runs["float32"].state)
    for key in ("train/y/loss", "train/label/loss"):
        np.testing.assert_allclose(runs["bfloat16"].history[key], runs["float32"].history[key], rtol=0.1,
                                   err_msg=key)
    chex.assert_trees_all_close(runs["bfloat16"].state.params, runs["float32"].state.params, atol=0.05)


def test_a_precision_is_checked_named_in_the_signature_and_a_resume_in_another_is_refused():
    for precision, scale, message in (("half", 1.0, "unknown precision 'half'"), ("float16", 0, "loss_scale"),
                                      ("float16", float("nan"), "loss_scale"), ("bfloat16", 8.0, "for float16")):
        with pytest.raises(ValueError, match=message):
            check_precision(precision, scale)
    model = hard_sharing(MLP((4,)), TASKS)
    assert mixed_precision(model, "float32") is model and precision_of(model) == "float32"
    assert mixed_precision(mixed_precision(model, "bfloat16"), "float32") is model
    assert precision_of(mixed_precision(mixed_precision(model, "bfloat16"), "float16", 1024)) == \
        "float16 (loss scale 1024)"
    state = {"w": jax.ShapeDtypeStruct((2,), jnp.float32)}
    plain, half = run_signature(TASKS, state), run_signature(TASKS, state, precision="bfloat16")
    assert "precision" not in plain and signature_mismatch(plain, plain) is None
    assert "computed in float32 and would now compute in bfloat16" in signature_mismatch(plain, half)
