"""One protocol for every balancing method, and chain: the composition is the product of weights."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtl_jax as mtl
from mtl_jax import experiment  # noqa: F401 - registers every named method
from mtl_jax.aggregation import graddrop, mgda, upgrad
from mtl_jax.balancing import Direction, Info, Method, at_level, chain, gramian_of
from mtl_jax.registry import AGGREGATORS, WEIGHTINGS, Registry
from mtl_jax.weighting import famo, log_losses, static, uncertainty

from conftest import jit_once

KEY = jax.random.PRNGKey(0)
TASKS = (mtl.regression("a"), mtl.classification("b", 3), mtl.regression("c"))


def _info(seed=0, tasks=3):
    rng = np.random.default_rng(seed)
    jacobian = jnp.asarray(rng.normal(size=(tasks, 4, 5)), jnp.float32)  # [T, batch, features] at z
    jacobian = jacobian.at[1].set(-0.8 * jacobian[0] + 0.3 * jacobian[1])  # a conflicting pair
    losses = jnp.asarray(rng.uniform(0.1, 3.0, size=tasks), jnp.float32)
    return Info(losses, gramian_of(jacobian), jacobian)


def _every_method():
    methods = [(f"weighting:{n}", WEIGHTINGS.get(n)(TASKS, **({"steps_per_epoch": 2} if n == "dwa" else {})))
               for n, _ in WEIGHTINGS.describe()]
    return methods + [(f"aggregator:{n}", AGGREGATORS.get(n)()) for n, _ in AGGREGATORS.describe()]


@pytest.mark.parametrize("name,method", _every_method(), ids=[n for n, _ in _every_method()])
def test_every_method_is_called_the_same_way(name, method):
    info = _info()
    state = method.init(3)
    for step in range(2):
        out, state = jit_once(method.update)(info, state, jax.random.fold_in(KEY, step))
    weights = out.weights if isinstance(out, Direction) else out
    assert weights.shape == (3,) and np.isfinite(np.asarray(weights)).all(), name
    assert isinstance(out, Direction) == (method.needs == "feature_jacobian"), name
    if isinstance(out, Direction):
        assert jax.tree.map(jnp.shape, out.cotangent) == jax.tree.map(lambda j: j.shape[1:], info.jacobian)


@pytest.mark.parametrize("first", [static([1.0, 2.0, 0.5]), uncertainty(("regression", "classification", "regression")),
                                   log_losses()], ids=["static", "uncertainty", "log_losses"])
@pytest.mark.parametrize("second", [mgda(), upgrad()], ids=["mgda", "upgrad"])
def test_a_chain_weights_by_the_product_and_the_second_piece_sees_the_weighted_gramian(first, second):
    info = _info(1)
    combined = chain(first, second)
    weights, state = combined.update(info, combined.init(3), KEY)
    keys = jax.random.split(KEY, 2)
    w_first, _ = first.update(Info(info.losses, info.gramian, info.jacobian), first.init(3), keys[0])
    c_second, _ = second.update(Info(info.losses, info.gramian * jnp.outer(w_first, w_first)), second.init(3), keys[1])
    np.testing.assert_allclose(weights, w_first * c_second, rtol=1e-5, atol=1e-7)
    assert len(state) == 2


def test_chains_nest_and_one_piece_is_itself():
    info = _info(2)
    pieces = (log_losses(), static([1.0, 3.0, 0.5]), mgda())
    flat = chain(*pieces)
    left = chain(chain(pieces[0], pieces[1]), pieces[2])
    right = chain(pieces[0], chain(pieces[1], pieces[2]))
    expected = flat.update(info, flat.init(3), KEY)[0]
    for nested in (left, right):
        np.testing.assert_allclose(nested.update(info, nested.init(3), KEY)[0], expected, rtol=1e-5)
    assert chain(pieces[1]) is pieces[1]


def test_log_losses_then_equal_weights_is_the_gradient_of_the_summed_log_losses():
    losses = jnp.array([0.5, 2.0, 8.0])
    weights, _ = chain(log_losses(0.0), static([1.0, 1.0, 1.0])).update(Info(losses), ((), ()), KEY)
    np.testing.assert_allclose(weights, 1.0 / losses, rtol=1e-6)


def test_graddrop_in_a_chain_keeps_the_weighting_for_the_heads_and_sees_weighted_gradients():
    info = _info(3)
    combined = chain(static([1.0, 2.0, 0.5]), graddrop())
    assert combined.needs == "feature_jacobian"
    out, _ = combined.update(info, combined.init(3), KEY)
    np.testing.assert_allclose(out.weights, [1.0, 2.0, 0.5])
    # With one sign everywhere GradDrop keeps every gradient: the cotangent is the weighted sum.
    same_sign = Info(info.losses, None, jnp.abs(info.jacobian))
    out, _ = combined.update(same_sign, combined.init(3), KEY)
    np.testing.assert_allclose(out.cotangent, jnp.tensordot(jnp.array([1.0, 2.0, 0.5]), same_sign.jacobian, axes=1),
                               rtol=1e-5)


def test_what_a_chain_needs_and_what_it_refuses():
    assert chain(log_losses(), famo()).needs == "losses"
    assert chain(famo(), upgrad()).needs == "feature_gramian"
    assert at_level(chain(famo(), upgrad()), "parameter").needs == "parameter_gramian"
    with pytest.raises(ValueError, match="at least one"):
        chain()
    with pytest.raises(TypeError, match=r"piece 1 is the function 'upgrad'; call it: upgrad\(\)"):
        chain(famo(), upgrad)
    with pytest.raises(ValueError, match="must come last"):
        chain(graddrop(), upgrad())
    with pytest.raises(ValueError, match="different levels"):
        chain(at_level(mgda(), "parameter"), upgrad())
    with pytest.raises(ValueError, match="feature"):
        at_level(chain(famo(), graddrop()), "parameter")


def test_registry_names_are_the_function_names_and_old_names_are_aliases():
    for old, new in (("uw", "uncertainty"), ("rlw", "random_weighting"), ("gls", "geometric")):
        assert WEIGHTINGS.get(old) is WEIGHTINGS.get(new)
        assert hasattr(mtl.weighting, new)
        assert f"also: {old}" in dict(WEIGHTINGS.describe())[new]
    registry = Registry("thing")
    registry.register("one", "first", aliases=("uno",))(lambda: 1)
    with pytest.raises(ValueError, match="'uno' is registered twice"):
        registry.register("two", "second", aliases=("uno",))(lambda: 2)
    with pytest.raises(KeyError, match="unknown thing 'three'"):
        registry.get("three")
    # case-insensitive, LibMTL's short names, and a suggestion for a near miss
    from mtl_jax.registry import ARCHITECTURES
    assert WEIGHTINGS.get("UW") is WEIGHTINGS.get("uncertainty") and WEIGHTINGS.get("EW") is WEIGHTINGS.get("equal")
    assert ARCHITECTURES.get("HPS") is ARCHITECTURES.get("hard") and ARCHITECTURES.get("MMoE") is ARCHITECTURES.get("mmoe")
    with pytest.raises(KeyError, match="unknown weighting method 'uncertainity'; did you mean 'uncertainty'"):
        WEIGHTINGS.get("uncertainity")
    with pytest.raises(KeyError, match="unknown aggregator 'pcgard'; did you mean 'pcgrad'"):
        AGGREGATORS.get("pcgard")


def test_a_custom_method_plugs_into_the_train_step():
    """Anything with init/update/needs is a method: a hand-written one trains like the built-in ones."""
    from mtl_jax.models import MLP, hard_sharing
    from conftest import toy_regression_classification

    tasks = (mtl.regression("y"), mtl.classification("label", 3))
    inverse = Method(lambda n: jnp.zeros(()), lambda info, count, key: (1.0 / info.losses, count + 1))
    data = toy_regression_classification(32)
    state, history = mtl.fit(hard_sharing(MLP((8,)), tasks), tasks, data, epochs=2, batch_size=16, input_key="x",
                             progress=False, weighting=chain(inverse, upgrad()))
    assert int(state.weighting_state[0]) == 4
    assert history["train/y/loss"][-1] < history["train/y/loss"][0]


def test_equal_options_are_the_same_method_and_compile_one_step():
    """Compiled steps are keyed by value: however the options are spelled, one program."""
    from mtl_jax.aggregation import cagrad
    from mtl_jax.experiment import make_weighting
    from mtl_jax.models import MLP, hard_sharing
    from mtl_jax.train import create_train_state, make_train_step
    from conftest import toy_regression_classification
    import optax

    assert famo(0.025) is famo(beta=0.025) is famo(0.025, 1e-3, 1e-8)
    assert cagrad(0.4) is cagrad(c=0.4, rescale=1)
    assert uncertainty(["regression", "classification"]) is uncertainty(("regression", "classification"))
    assert chain(log_losses(), famo(), upgrad()) is chain(log_losses(1e-8), famo(beta=0.025), upgrad())
    from mtl_jax.train.optim import make_optimizer
    assert make_optimizer("adam", 1e-3) is make_optimizer(learning_rate=0.001, schedule="constant")
    tasks = (mtl.regression("y"), mtl.classification("label", 3))
    spelled = [make_weighting("famo", tasks, {"beta": 0.025}, steps_per_epoch=4, log=True, aggregator="cagrad",
                              aggregator_kwargs={"c": 0.4}),
               make_weighting("famo", tasks, {}, steps_per_epoch=4, log=True, aggregator="cagrad",
                              aggregator_kwargs={"rescale": 1})]
    assert spelled[0] == spelled[1] and hash(spelled[0]) == hash(spelled[1])
    model, data = hard_sharing(MLP((8,)), tasks), toy_regression_classification(16)
    batch = {**data, "_valid": jnp.ones(16)}
    optimizer = optax.sgd(0.1)
    steps = [make_train_step(model, tasks, optimizer, w, "x") for w in spelled]
    assert steps[0] is steps[1]
    for weighting in spelled:
        state = create_train_state(model, tasks, optimizer, weighting, data["x"][:2])
        steps[0](state, batch)
    assert steps[0]._cache_size() == 1
