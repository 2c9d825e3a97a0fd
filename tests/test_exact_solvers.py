"""The conflict-averse aggregators are exact on adversarial Gramians, and their certificates are honest.

Jacobians with condition numbers up to 1e10, exact rank deficiency, duplicated and colinear rows,
a zero task, task scales spanning 1e-6 to 1e6, T from 2 to 64. Each method's defining property is
checked in float64 from the Jacobian itself, independently of the solver's own residual.
"""
import importlib
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.optimize

import mtl_jax as mtl
from mtl_jax.aggregation import qp
from mtl_jax.aggregation.cagrad import cagrad_solve
from mtl_jax.aggregation.certificate import issue
from mtl_jax.aggregation.mgda import mgda_solve
from mtl_jax.aggregation.nash_mtl import nash_solve
from mtl_jax.aggregation.upgrad import dualproj_solve, upgrad_solve
from mtl_jax.models import MLP, hard_sharing
from mtl_jax.train.writers import read_rows
from mtl_jax.weighting import static

from conftest import jit_once, toy_regression_classification

upgrad_module = importlib.import_module("mtl_jax.aggregation.upgrad")

SIZES = (2, 5, 16, 64)
KINDS = ("conditioned", "rank_deficient", "scaled", "duplicated", "opposite", "zero_task")


def jacobian(kind: str, tasks: int, seed: int) -> np.ndarray:
    """A T x P Jacobian of the named hard kind (every kind is also badly conditioned)."""
    rng = np.random.default_rng([seed, tasks, KINDS.index(kind)])
    params = 2 * tasks + 3
    rank = max(1, tasks // 2) if kind == "rank_deficient" else tasks
    u, _ = np.linalg.qr(rng.normal(size=(tasks, tasks)))
    v, _ = np.linalg.qr(rng.normal(size=(params, params)))
    singular = np.zeros(tasks)
    singular[:rank] = np.logspace(0, -5, rank)  # Gramian condition number up to 1e10
    j = (u * singular) @ v[:tasks]
    if kind == "scaled":
        j *= np.logspace(-6, 6, tasks)[rng.permutation(tasks)][:, None]
    if kind == "duplicated" and tasks > 1:
        j[1] = j[0]
    if kind == "opposite" and tasks > 1:
        j[-1] = -3 * j[0]
    if kind == "zero_task":
        j[0] = 0
    return j


CASES = [(kind, t) for kind in KINDS for t in SIZES]
CAGRAD_C = 0.4
# compiled once per Gramian shape (not once per case): each wrapper keeps its programs
PROJECTIONS = jit_once(jax.vmap(qp.min_norm_above, in_axes=(None, 0)))
MIN_NORM_ABOVE = jit_once(qp.min_norm_above)
UPGRAD, DUALPROJ = jit_once(upgrad_solve), jit_once(dualproj_solve)
MGDA, NASH = jit_once(mgda_solve), jit_once(nash_solve)
CAGRAD = jit_once(lambda g: cagrad_solve(g, CAGRAD_C, rescale=0))


@pytest.fixture(scope="module")
def x64():
    with jax.enable_x64(True):
        yield


def dual_cone_kkt(j, lower, v):
    """How far ``d = J^T v`` (v >= lower) is from the exact projection of ``J^T lower`` onto the dual
    cone, from the KKT conditions in the Jacobian's space (relative to the gradients' scale)."""
    d, norms = j.T @ v, np.linalg.norm(j, axis=1)
    scale = max(np.linalg.norm(j.T @ lower), 1e-12 * np.max(norms)) * np.maximum(norms, 1e-300)
    conflict = np.max(np.maximum(-(j @ d), 0.0) / scale)  # <d, g_j> >= 0
    slack = v - lower
    complementarity = np.max(np.abs(slack) * np.abs(j @ d) / scale / max(np.max(np.abs(v)), 1e-300))
    return max(conflict, complementarity, -min(np.min(slack), 0.0))


@pytest.mark.parametrize("kind, tasks", CASES)
def test_upgrad_and_dualproj_are_the_exact_projections_and_never_conflict(x64, kind, tasks):
    j = jacobian(kind, tasks, 0)
    gramian = jnp.asarray(j @ j.T)
    eye = np.eye(tasks)
    projections = PROJECTIONS(gramian, jnp.asarray(eye))
    for i in range(tasks):
        assert dual_cone_kkt(j, eye[i], np.asarray(projections.x[i])) < 1e-9, (kind, tasks, i)
    coefficients, certificate = UPGRAD(gramian)
    np.testing.assert_allclose(coefficients, np.mean(projections.x, axis=0), rtol=1e-12)
    assert float(certificate.residual) < float(certificate.tolerance)
    d, norms = j.T @ np.asarray(coefficients), np.linalg.norm(j, axis=1)
    terms = np.abs(np.asarray(coefficients)) @ norms  # d's rounding scale (d is ~0 when the cone is {0})
    assert np.all(j @ d >= -1e-9 * terms * norms)
    mean = np.full(tasks, 1.0 / tasks)
    coefficients, certificate = DUALPROJ(gramian)
    assert dual_cone_kkt(j, mean, np.asarray(coefficients)) < 1e-9
    assert float(certificate.residual) < float(certificate.tolerance)


@pytest.mark.parametrize("tasks", [3, 5, 8])
def test_the_projection_equals_an_independent_nnls_on_well_conditioned_jacobians(x64, tasks):
    rng = np.random.default_rng(tasks)
    j = rng.normal(size=(tasks, 2 * tasks))
    j[1] = -0.8 * j[0] + 0.1 * rng.normal(size=2 * tasks)  # conflicting pair
    solution = MIN_NORM_ABOVE(jnp.asarray(j @ j.T), jnp.asarray(np.eye(tasks)[0]))
    slack, _ = scipy.optimize.nnls(j.T, -j[0])
    np.testing.assert_allclose(j.T @ np.asarray(solution.x), j.T @ (np.eye(tasks)[0] + slack), atol=1e-10)


def _brute_force_min_norm(gramian):
    best, arg = np.inf, None
    for size in range(1, len(gramian) + 1):
        for support in map(list, itertools.combinations(range(len(gramian)), size)):
            kkt = np.block([[gramian[np.ix_(support, support)], np.ones((size, 1))], [np.ones((1, size)), 0]])
            coefficients = np.linalg.solve(kkt, np.r_[np.zeros(size), 1.0])[:size]
            if np.all(coefficients >= 0):
                v = np.zeros(len(gramian))
                v[support] = coefficients
                if v @ gramian @ v < best:
                    best, arg = v @ gramian @ v, v
    return arg


@pytest.mark.parametrize("kind, tasks", CASES)
def test_mgda_satisfies_its_kkt_conditions(x64, kind, tasks):
    j = jacobian(kind, tasks, 1)
    coefficients, certificate = MGDA(jnp.asarray(j @ j.T))
    v = np.asarray(coefficients)
    d, scale = j.T @ v, np.max(np.linalg.norm(j, axis=1)) ** 2
    assert np.all(v >= 0) and abs(v.sum() - 1) < 1e-12
    dots = j @ d
    assert np.min(dots - d @ d) >= -1e-9 * scale  # <g_i, d> >= ||d||^2: a common descent direction
    assert np.max(np.abs(dots - d @ d)[v > 1e-12]) <= 1e-9 * scale  # with equality on the support
    assert float(certificate.residual) < float(certificate.tolerance)


@pytest.mark.parametrize("tasks", [3, 4, 5])
def test_mgda_equals_brute_force_enumeration_of_supports(x64, tasks):
    rng = np.random.default_rng(tasks)
    j = rng.normal(size=(tasks, tasks + 2))
    j[:, 0] += 1.0  # a common direction, so that the min-norm point is not 0
    gramian = j @ j.T
    v = np.asarray(MGDA(jnp.asarray(gramian))[0])
    np.testing.assert_allclose(j.T @ v, j.T @ _brute_force_min_norm(gramian), atol=1e-12)


@pytest.mark.parametrize("kind, tasks", CASES)
def test_cagrad_is_the_optimum_of_its_primal(x64, kind, tasks):
    """Primal optimality, from the Jacobian: ``d`` on the ball's boundary, and ``d - g_0`` a positive
    combination of exactly the tasks attaining ``min_i <g_i, d>``."""
    j = jacobian(kind, tasks, 2)
    c = CAGRAD_C
    coefficients, certificate = CAGRAD(jnp.asarray(j @ j.T))
    mean = np.full(tasks, 1.0 / tasks)
    g0 = j.T @ mean
    if np.linalg.norm(g0) < 1e-12 * np.max(np.linalg.norm(j, axis=1)):
        return
    d = j.T @ np.asarray(coefficients)
    scale = np.max(np.linalg.norm(j, axis=1)) * np.linalg.norm(d)
    w = np.asarray(coefficients) - mean
    rng = np.random.default_rng(tasks)
    for _ in range(200):  # no point of the ball does better for the worst task
        u = rng.normal(size=d.shape)
        other = g0 + c * np.linalg.norm(g0) * u / np.linalg.norm(u)
        assert np.min(j @ other) <= np.min(j @ d) + 1e-9 * scale
    if np.max(np.abs(w)) == 0:
        return  # g_w* = 0: the worst task (e.g. a zero one) cannot improve, and d = g_0 is optimal
    assert abs(np.linalg.norm(d - g0) - c * np.linalg.norm(g0)) <= 1e-9 * np.linalg.norm(g0)
    assert np.all(w >= -1e-9 * np.max(np.abs(w)))
    dots = j @ d
    assert np.max(dots[w > 1e-9 * np.max(np.abs(w))] - dots.min()) <= 1e-8 * scale
    assert float(certificate.residual) < float(certificate.tolerance)


def test_cagrad_beats_the_mean_for_the_worst_task_and_reduces_to_it_at_c_0(x64):
    j = jacobian("scaled", 8, 3)
    gramian = jnp.asarray(j @ j.T)
    coefficients = np.asarray(cagrad_solve(gramian, 0.5, rescale=0)[0])
    mean = np.full(8, 1 / 8)
    assert np.min(j @ (j.T @ coefficients)) >= np.min(j @ (j.T @ mean))
    np.testing.assert_array_equal(cagrad_solve(gramian, 0.0)[0], mean)


def test_nash_mtl_solves_the_bargaining_equations_or_says_it_could_not(x64):
    j = np.random.default_rng(0).normal(size=(5, 12))
    j[1] *= 1e3
    gramian = j @ j.T
    a, certificate = NASH(jnp.asarray(gramian))
    normalised = gramian / np.linalg.norm(gramian)
    np.testing.assert_allclose(np.asarray(a) * (normalised @ np.asarray(a)), 1.0, atol=1e-3)
    assert float(certificate.residual) < float(certificate.tolerance)
    j[3] = -j[2]  # a positive combination of gradients is 0: no solution exists
    _, certificate = NASH(jnp.asarray(j @ j.T))
    assert float(certificate.residual) > float(certificate.tolerance)


@pytest.mark.parametrize("kind, tasks", [(kind, t) for kind in KINDS for t in (3, 16, 64)])
def test_float32_certificates_never_claim_a_conflicting_direction(kind, tasks):
    """In float32 a solve may fall short on the hardest Gramians, but only with a residual above
    tolerance: a certified UPGrad direction conflicts with no task beyond the rounding of float32
    sums, i.e. relative to ``||g_j|| sum_i |c_i| ||g_i||``."""
    j = jacobian(kind, tasks, 4)
    coefficients, certificate = UPGRAD(jnp.asarray(j @ j.T, jnp.float32))
    c, norms = np.asarray(coefficients, np.float64), np.linalg.norm(j, axis=1)
    live = norms > 0
    worst = np.min((j @ (j.T @ c))[live] / norms[live]) / (np.abs(c) @ norms)
    if float(certificate.residual) <= float(certificate.tolerance):
        assert worst >= -1e-4, (kind, tasks, worst)
    if kind in ("conditioned", "duplicated", "opposite", "zero_task"):
        assert float(certificate.residual) <= float(certificate.tolerance), (kind, tasks)


def test_the_step_logs_the_worst_residual_and_warns_once_when_a_solve_is_not_certified(tmp_path, monkeypatch):
    data = toy_regression_classification(32)
    tasks = (mtl.regression("y"), mtl.classification("label", 3))
    model = hard_sharing(MLP((16,)), tasks)
    weighting = mtl.chain(static((1.0, 1.0)), mtl.aggregation.upgrad())
    _, history = mtl.fit(model, tasks, data, epochs=1, batch_size=8, input_key="x", progress=False,
                         weighting=weighting, workdir=tmp_path / "a", tensorboard=False, log_every_steps=1,
                         optimizer=optax.adam(1e-2))
    residuals = [row["train/solver_residual"] for row in read_rows(tmp_path / "a" / "metrics.jsonl")
                 if "train/y/step_loss" in row]
    assert len(residuals) == 4 and max(residuals) < qp.tolerance(jnp.float32)
    assert history["train/solver_residual"] == [max(residuals)]
    # Every solve now reports a residual above its tolerance.
    monkeypatch.setattr(upgrad_module, "issue", lambda method, residual, tol: issue(method, residual + 1.0, tol))
    mtl.aggregation.upgrad.cache_clear()
    try:
        weighting = mtl.chain(static((1.0, 1.0)), mtl.aggregation.upgrad())
        with pytest.warns(RuntimeWarning, match=r"upgrad: the solver's residual .* at step 1 is .* its tolerance") as seen:
            mtl.fit(model, tasks, data, epochs=1, batch_size=8, input_key="x", progress=False, weighting=weighting)
        assert len([w for w in seen if "solver's residual" in str(w.message)]) == 1
    finally:
        mtl.aggregation.upgrad.cache_clear()
