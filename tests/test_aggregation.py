"""Gradient aggregators: each one's defining property on random and adversarial Jacobians."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mtl_jax as mtl
from mtl_jax.aggregation import (aligned_mtl, cagrad, config, dualproj, graddrop,
                                 gradvac, imtl_g, mean, mgda, nash_mtl, pcgrad, sum_, upgrad)
from mtl_jax.aggregation.aligned_mtl import balance_matrix
from mtl_jax.aggregation.graddrop import graddrop_direction
from mtl_jax.balancing import Direction, Info, at_level, chain
from mtl_jax.experiment import make_weighting
from mtl_jax.models import MLP, hard_sharing
from mtl_jax.registry import AGGREGATORS
from mtl_jax.weighting import static

from conftest import assert_resumes_bitwise, jit_once, toy_regression_classification

KEY = jax.random.PRNGKey(0)


def _jacobian(seed, tasks, dim=12, conflict=False):
    rng = np.random.default_rng(seed)
    jacobian = rng.normal(size=(tasks, dim))
    if conflict:  # every pair of tasks at an obtuse angle
        jacobian[1:] -= 1.5 * jacobian[0] * (jacobian[1:] @ jacobian[0] / (jacobian[0] @ jacobian[0]))[:, None]
    return jnp.asarray(jacobian, jnp.float32)


def _info(gramian):
    return Info(jnp.ones(gramian.shape[0]), gramian)


def _coefficients(aggregator, jacobian, key=KEY):
    gramian = jacobian @ jacobian.T
    return jit_once(lambda g: aggregator.update(_info(g), aggregator.init(g.shape[0]), key)[0])(gramian)


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


@pytest.mark.parametrize("method", [mgda, upgrad, dualproj, imtl_g, mean, sum_, cagrad, nash_mtl, aligned_mtl, config])
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


GRAMIAN_AGGREGATORS = [n for n, _ in AGGREGATORS.describe() if AGGREGATORS.get(n)().needs != "feature_jacobian"]


@pytest.mark.parametrize("name", GRAMIAN_AGGREGATORS)
@pytest.mark.parametrize("case", sorted(DEGENERATE))
def test_every_aggregator_stays_finite_on_degenerate_gradients(name, case):
    c = _coefficients(AGGREGATORS.get(name)(), DEGENERATE[case])
    assert c.shape == (DEGENERATE[case].shape[0],) and np.isfinite(np.asarray(c)).all()


@pytest.mark.parametrize("case", sorted(DEGENERATE))
def test_graddrop_stays_finite_on_degenerate_gradients(case):
    jacobian = DEGENERATE[case][:, None, :]  # [T, batch 1, features]
    d = graddrop().update(Info(jnp.ones(jacobian.shape[0]), None, jacobian), (), KEY)[0]
    assert isinstance(d, Direction)
    d = d.cotangent
    assert d.shape == jacobian.shape[1:] and np.isfinite(np.asarray(d)).all()


def test_aggregation_sees_the_weighted_gradients():
    jacobian = _jacobian(2, 3)
    combined = chain(static([1.0, 2.0, 0.5]), mgda())
    weights, _ = combined.update(_info(jacobian @ jacobian.T), combined.init(3), KEY)
    weighted = jacobian * jnp.array([1.0, 2.0, 0.5])[:, None]
    expected = _coefficients(mgda(), weighted) * jnp.array([1.0, 2.0, 0.5])
    np.testing.assert_allclose(weights, expected, rtol=1e-4, atol=1e-6)


# Every aggregator at the feature level; at the parameter level the coefficients come from the same
# Gramian-to-weights function, so a few stand for the rest (the parameter-level Gramian itself is
# tested exactly in test_task_gradients.py and test_architectures.py).
LEVELS = ([(n, "feature") for n, _ in AGGREGATORS.describe()]
          + [(n, "parameter") for n in ("mgda", "upgrad", "cagrad", "nash_mtl")])


@pytest.mark.parametrize("name,level", LEVELS)
def test_every_aggregator_trains_a_model_at_every_level(name, level):
    tasks = (mtl.regression("y"), mtl.classification("label", 3))
    model = hard_sharing(MLP((16,)), tasks)
    data = toy_regression_classification(48, seed=1)
    weighting = make_weighting("equal", tasks, {}, steps_per_epoch=6, aggregator=name, level=level)
    _, history = mtl.fit(model, tasks, data, epochs=4, batch_size=8, input_key="x", optimizer=optax.adam(1e-2),
                         weighting=weighting, progress=False)
    assert history["train/y/loss"][-1] < history["train/y/loss"][0]
    assert history["train/label/loss"][-1] < history["train/label/loss"][0]


def _directions(method, jacobian, key=KEY):
    return _coefficients(method, jacobian, key) @ jacobian


def test_cagrad_with_c_zero_is_the_mean():
    jacobian = _jacobian(4, 6, conflict=True)
    np.testing.assert_allclose(_coefficients(cagrad(c=0.0), jacobian), np.full(6, 1 / 6), rtol=1e-6)


@pytest.mark.parametrize("seed,tasks,conflict", JACOBIANS)
def test_cagrad_maximises_the_worst_task_improvement_within_its_ball(seed, tasks, conflict):
    jacobian = np.asarray(_jacobian(seed, tasks, conflict=conflict), np.float64)
    c = 0.5
    d = np.asarray(_directions(cagrad(c=c, rescale=0), jnp.asarray(jacobian, jnp.float32)), np.float64)
    g0 = jacobian.mean(axis=0)
    radius = c * np.linalg.norm(g0)
    assert np.linalg.norm(d - g0) <= radius * (1 + 1e-3) + 1e-6  # inside the ball
    worst = (jacobian @ d).min()
    assert worst >= (jacobian @ g0).min() - 1e-5  # at least as good as the mean for the worst task
    rng = np.random.default_rng(seed)
    for _ in range(2000):  # no feasible direction does noticeably better
        u = rng.normal(size=g0.shape)
        other = g0 + radius * rng.uniform() ** (1 / g0.size) * u / np.linalg.norm(u)
        assert (jacobian @ other).min() <= worst + 2e-3 * np.abs(jacobian @ g0).max()


def test_cagrad_rescales_as_the_authors_code():
    jacobian = _jacobian(2, 3)
    plain = _coefficients(cagrad(c=0.5, rescale=0), jacobian)
    np.testing.assert_allclose(_coefficients(cagrad(c=0.5, rescale=1), jacobian), plain / 1.25, rtol=1e-6)
    np.testing.assert_allclose(_coefficients(cagrad(c=0.5, rescale=2), jacobian), plain / 1.5, rtol=1e-6)
    with pytest.raises(ValueError, match="rescale"):
        cagrad(c=0.5, rescale=3)


@pytest.mark.parametrize("seed,tasks,conflict", JACOBIANS)
def test_nash_mtl_solves_the_bargaining_condition(seed, tasks, conflict):
    jacobian = _jacobian(seed, tasks, dim=16, conflict=conflict)
    a = np.asarray(_coefficients(nash_mtl(), jacobian), np.float64)
    gram = np.asarray(jacobian @ jacobian.T, np.float64)
    gram /= np.linalg.norm(gram)  # the authors' normalisation
    assert np.all(a > 0)
    np.testing.assert_allclose(a * (gram @ a), 1.0, rtol=2e-3)  # a_i <g_i, d> = 1


def test_nash_mtl_with_one_task_is_plain_descent_and_reuses_coefficients():
    np.testing.assert_allclose(_coefficients(nash_mtl(), _jacobian(0, 1)), [1.0], rtol=1e-5)
    method = nash_mtl(update_every=3)
    first, second = _jacobian(1, 3), _jacobian(2, 3)
    state = method.init(3)
    a1, state = method.update(_info(first @ first.T), state, KEY)
    a2, state = method.update(_info(second @ second.T), state, KEY)  # not recomputed
    a3, state = method.update(_info(second @ second.T), state, KEY)
    a4, state = method.update(_info(second @ second.T), state, KEY)  # recomputed on step 4
    np.testing.assert_array_equal(a1, a2)
    np.testing.assert_array_equal(a1, a3)
    np.testing.assert_allclose(a4, _coefficients(nash_mtl(), second), rtol=1e-5)


def test_gradvac_with_zero_goals_is_pcgrad_on_two_tasks_and_learns_its_goals():
    g1, g2 = jnp.array([1.0, 0.0, 0.5]), jnp.array([-1.0, 1.0, 0.0])
    jacobian = jnp.stack([g1, g2])
    method = gradvac(beta=0.25)
    coefficients, goals = method.update(_info(jacobian @ jacobian.T), method.init(2), KEY)
    np.testing.assert_allclose(coefficients, _coefficients(pcgrad(), jacobian), rtol=1e-5)
    cosine = float(g1 @ g2 / jnp.linalg.norm(g1) / jnp.linalg.norm(g2))
    np.testing.assert_allclose(goals, [[0.0, 0.25 * cosine], [0.25 * cosine, 0.0]], rtol=1e-5, atol=1e-7)


def test_gradvac_lifts_a_similarity_below_its_goal_to_the_goal():
    g1, g2 = jnp.array([1.0, 0.2, 0.0]), jnp.array([0.1, 1.0, 0.3])  # cosine ~0.28: no conflict
    jacobian = jnp.stack([g1, g2])
    goals = jnp.array([[0.0, 0.6], [-1.0, 0.0]])  # task 1 aims at 0.6; task 2's goal is never above
    coefficients, _ = gradvac(beta=0.1).update(_info(jacobian @ jacobian.T), goals, KEY)
    new_g1 = coefficients @ jacobian - g2  # task 2's gradient is unchanged
    cosine = float(new_g1 @ g2 / jnp.linalg.norm(new_g1) / jnp.linalg.norm(g2))
    np.testing.assert_allclose(cosine, 0.6, rtol=1e-4)
    assert float(coefficients[1]) > 1.0  # unlike PCGrad, an agreeing pair is pulled closer


@pytest.mark.parametrize("seed,tasks,conflict", JACOBIANS)
def test_aligned_mtl_makes_the_gradients_orthogonal_with_equal_norms(seed, tasks, conflict):
    jacobian = _jacobian(seed, tasks, dim=16, conflict=conflict)
    gram = jacobian @ jacobian.T
    b = balance_matrix(gram)
    smallest = float(jnp.linalg.eigvalsh(gram)[0])
    np.testing.assert_allclose(b @ gram @ b, smallest * np.eye(tasks), atol=2e-3 * float(jnp.trace(gram)))
    np.testing.assert_allclose(_coefficients(aligned_mtl(), jacobian), b.sum(0), rtol=1e-5)


@pytest.mark.parametrize("seed,tasks,conflict", JACOBIANS)
def test_config_has_equal_cosine_with_every_gradient_and_never_conflicts(seed, tasks, conflict):
    jacobian = _jacobian(seed, tasks, dim=16, conflict=conflict)
    d = _directions(config(), jacobian)
    units = jacobian / jnp.linalg.norm(jacobian, axis=1, keepdims=True)
    cosines = np.asarray(units @ d / jnp.linalg.norm(d))
    np.testing.assert_allclose(cosines, cosines[0], rtol=2e-3, atol=2e-4)
    assert cosines[0] > 0
    unit_d = d / jnp.linalg.norm(d)
    np.testing.assert_allclose(float(jnp.linalg.norm(d)), float(jnp.sum(jacobian @ unit_d)), rtol=1e-3)


def test_graddrop_keeps_one_sign_per_coordinate():
    jacobian = jnp.array([[[1.0, 2.0, -1.0, 0.5]], [[-3.0, 1.0, -2.0, 0.5]], [[1.0, 1.0, -1.0, -0.5]]])  # [T, 1, 4]
    for seed in range(20):
        d = graddrop_direction(jacobian, jax.random.PRNGKey(seed))[0]
        positive, negative = jnp.sum(jnp.maximum(jacobian[:, 0], 0), 0), jnp.sum(jnp.minimum(jacobian[:, 0], 0), 0)
        assert all(bool(jnp.isclose(v, p) | jnp.isclose(v, n)) for v, p, n in zip(d, positive, negative))
        np.testing.assert_allclose(d[1], 4.0)  # every task agrees: all kept
        np.testing.assert_allclose(d[2], -4.0)
    np.testing.assert_allclose(graddrop_direction(jacobian, KEY, leak=1.0), jnp.sum(jacobian, 0))  # full leak: sum


def test_graddrop_keeps_positive_signs_with_probability_equal_to_their_purity():
    jacobian = jnp.array([[[3.0]], [[-1.0]]])  # purity 0.5 (1 + 2/4) = 0.75
    kept = [float(graddrop_direction(jacobian, jax.random.PRNGKey(s))[0, 0]) for s in range(400)]
    assert set(kept) <= {3.0, -1.0}
    assert 0.68 < np.mean(np.array(kept) == 3.0) < 0.82


def test_graddrop_reduces_the_batch_before_choosing_signs():
    # example 0 pulls the first task negative, but the batch sum is positive for both tasks: all pass
    jacobian = jnp.array([[[-1.0], [3.0]], [[1.0], [1.0]]])
    d = graddrop_direction(jacobian, KEY)
    np.testing.assert_allclose(d, jnp.sum(jacobian, axis=0))


def test_graddrop_exists_only_at_the_feature_level():
    with pytest.raises(ValueError, match="feature"):
        at_level(chain(static([1.0, 1.0]), graddrop()), "parameter")


@pytest.mark.parametrize("name,kwargs,level", [("gradvac", {"beta": 0.5}, "feature"),
                                               ("nash_mtl", {"update_every": 2}, "parameter"),
                                               ("pcgrad", {}, "parameter")])
def test_stateful_and_random_aggregators_resume_bitwise(name, kwargs, level, tmp_path):
    tasks = (mtl.regression("y"), mtl.classification("label", 3))
    model = hard_sharing(MLP((16,)), tasks)
    data = toy_regression_classification(40, seed=1)
    weighting = make_weighting("equal", tasks, {}, steps_per_epoch=5, aggregator=name, aggregator_kwargs=kwargs,
                               level=level)
    assert_resumes_bitwise(model, tasks, data, tmp_path, weighting=weighting)
