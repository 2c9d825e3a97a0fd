"""Gradient aggregators: each one's defining property on random and adversarial Jacobians."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mtl_jax as mtl
from mtl_jax.aggregation import aggregated, dualproj, imtl_g, mean, mgda, pcgrad, sum_, upgrad
from mtl_jax.experiment import make_weighting
from mtl_jax.models import MLP, hard_sharing
from mtl_jax.registry import AGGREGATORS
from mtl_jax.weighting import static

from conftest import toy_regression_classification

KEY = jax.random.PRNGKey(0)


def _jacobian(seed, tasks, dim=12, conflict=False):
    rng = np.random.default_rng(seed)
    jacobian = rng.normal(size=(tasks, dim))
    if conflict:  # every pair of tasks at an obtuse angle
        jacobian[1:] -= 1.5 * jacobian[0] * (jacobian[1:] @ jacobian[0] / (jacobian[0] @ jacobian[0]))[:, None]
    return jnp.asarray(jacobian, jnp.float32)


def _coefficients(aggregator, jacobian, key=KEY):
    gramian = jacobian @ jacobian.T
    return jax.jit(lambda g: aggregator.update(g, aggregator.init(g.shape[0]), key)[0])(gramian)


JACOBIANS = [(seed, t, c) for seed, t, c in [(0, 2, False), (1, 3, False), (2, 5, False), (3, 3, True),
                                             (4, 6, True), (5, 8, False)]]


@pytest.mark.parametrize("seed,tasks,conflict", JACOBIANS)
def test_mgda_is_the_min_norm_point_of_the_convex_hull(seed, tasks, conflict):
    jacobian = _jacobian(seed, tasks, conflict=conflict)
    c = np.asarray(_coefficients(mgda(), jacobian), np.float64)
    gram = np.asarray(jacobian @ jacobian.T, np.float64)
    assert np.all(c >= -1e-6) and abs(c.sum() - 1) < 1e-5
    value, gradient = c @ gram @ c, gram @ c
    scale = np.trace(gram)
    assert np.all(gradient >= value - 2e-4 * scale)  # KKT: <d, g_i> >= ||d||^2 for every task
    assert np.all(np.abs(gradient - value)[c > 1e-3] <= 2e-4 * scale)  # with equality on the support


@pytest.mark.parametrize("method", [upgrad, dualproj])
@pytest.mark.parametrize("seed,tasks,conflict", JACOBIANS)
def test_upgrad_and_dualproj_never_conflict(method, seed, tasks, conflict):
    jacobian = _jacobian(seed, tasks, conflict=conflict)
    d = _coefficients(method(), jacobian) @ jacobian
    scale = float(jnp.max(jnp.sum(jacobian ** 2, axis=1)))
    assert np.all(np.asarray(jacobian @ d) >= -1e-4 * scale)


@pytest.mark.parametrize("method", [upgrad, dualproj])
def test_without_conflict_upgrad_and_dualproj_are_the_mean(method):
    jacobian = jnp.abs(_jacobian(7, 4))  # nonnegative vectors: every pair at an acute angle
    np.testing.assert_allclose(_coefficients(method(), jacobian), 0.25, atol=1e-4)


def test_pcgrad_on_two_conflicting_gradients_is_the_closed_form_projection():
    g1, g2 = jnp.array([1.0, 0.0, 0.5]), jnp.array([-1.0, 1.0, 0.0])
    expected = (g1 - (g1 @ g2) / (g2 @ g2) * g2) + (g2 - (g2 @ g1) / (g1 @ g1) * g1)
    d = _coefficients(pcgrad(), jnp.stack([g1, g2])) @ jnp.stack([g1, g2])
    np.testing.assert_allclose(d, expected, rtol=1e-5)
    agreeing = jnp.stack([g1, g1 + 0.1])
    np.testing.assert_allclose(_coefficients(pcgrad(), agreeing), [1.0, 1.0])  # no conflict: the sum


def test_pcgrad_removes_the_conflicting_component_of_each_projected_gradient():
    jacobian = _jacobian(3, 3, conflict=True)
    c = _coefficients(pcgrad(), jacobian)
    assert np.isfinite(np.asarray(c)).all()
    # with a different key the order differs, and so may the result; with the same key it is reproducible
    np.testing.assert_array_equal(c, _coefficients(pcgrad(), jacobian))


@pytest.mark.parametrize("seed,tasks,conflict", JACOBIANS)
def test_imtl_g_projects_equally_onto_every_unit_gradient(seed, tasks, conflict):
    jacobian = _jacobian(seed, tasks, conflict=conflict)
    a = _coefficients(imtl_g(), jacobian)
    d = a @ jacobian
    units = jacobian / jnp.linalg.norm(jacobian, axis=1, keepdims=True)
    projections = np.asarray(units @ d)
    np.testing.assert_allclose(projections, projections[0], rtol=2e-3, atol=2e-4)
    np.testing.assert_allclose(float(jnp.sum(a)), 1.0, rtol=1e-5)


@pytest.mark.parametrize("method", [mgda, upgrad, dualproj, imtl_g, mean, sum_])
def test_permuting_tasks_permutes_coefficients(method):
    jacobian = _jacobian(11, 5, conflict=True)
    permutation = np.array([3, 0, 4, 1, 2])
    np.testing.assert_allclose(_coefficients(method(), jacobian[permutation]),
                               np.asarray(_coefficients(method(), jacobian))[permutation], rtol=2e-3, atol=2e-4)


DEGENERATE = {
    "zero": jnp.zeros((3, 4)),
    "one zero": jnp.array([[1.0, 2.0, 0.0], [0.0, 0.0, 0.0], [-1.0, 0.5, 1.0]]),
    "duplicate": jnp.array([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [0.0, -1.0, 1.0]]),
    "colinear": jnp.array([[1.0, 2.0, 3.0], [-2.0, -4.0, -6.0], [0.5, 1.0, 1.5]]),
    "one task": jnp.array([[1.0, -2.0, 3.0]]),
}


@pytest.mark.parametrize("name", sorted(AGGREGATORS.describe()), ids=lambda n: n[0])
@pytest.mark.parametrize("case", sorted(DEGENERATE))
def test_every_aggregator_stays_finite_on_degenerate_gradients(name, case):
    c = _coefficients(AGGREGATORS.get(name[0])(), DEGENERATE[case])
    assert c.shape == (DEGENERATE[case].shape[0],) and np.isfinite(np.asarray(c)).all()


def test_aggregation_sees_the_weighted_gradients():
    jacobian = _jacobian(2, 3)
    combined = aggregated(static([1.0, 2.0, 0.5]), mgda())
    weights, _ = combined.update(jnp.ones(3), combined.init(3), KEY, jacobian @ jacobian.T)
    weighted = jacobian * jnp.array([1.0, 2.0, 0.5])[:, None]
    expected = _coefficients(mgda(), weighted) * jnp.array([1.0, 2.0, 0.5])
    np.testing.assert_allclose(weights, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", [n for n, _ in AGGREGATORS.describe()])
def test_every_aggregator_trains_a_model(name):
    tasks = (mtl.regression("y"), mtl.classification("label", 3))
    model = hard_sharing(MLP((16,)), tasks)
    data = toy_regression_classification(48, seed=1)
    weighting = make_weighting("equal", tasks, {}, steps_per_epoch=6, aggregator=name)
    _, history = mtl.fit(model, tasks, data, epochs=4, batch_size=8, input_key="x", optimizer=optax.adam(1e-2),
                         weighting=weighting, progress=False)
    assert history["train/y/loss"][-1] < history["train/y/loss"][0]
    assert history["train/label/loss"][-1] < history["train/label/loss"][0]
