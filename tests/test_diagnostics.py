"""Gradient-conflict diagnostics and inter-task affinity: their values, logging and files."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mtl_jax as mtl
from mtl_jax.diagnostics import affinity_table, conflict_summary, cosine_similarities, make_affinity_step, \
    strongest_partners
from mtl_jax.diagnostics.conflict import step_row
from mtl_jax.models import MLP, hard_sharing
from mtl_jax.tasks import task_losses
from mtl_jax.weighting import static
from mtl_jax.balancing import observed

from conftest import jit_once


def test_cosines_and_conflicts_from_a_gramian():
    jacobian = np.array([[1.0, 0.0], [-1.0, 1.0], [0.0, 0.0], [2.0, 0.1]])
    cosines = cosine_similarities(jacobian @ jacobian.T)
    np.testing.assert_allclose(cosines[0, 1], -1 / np.sqrt(2))
    np.testing.assert_allclose(cosines[2], 0.0)  # a zero gradient is similar to nothing
    np.testing.assert_allclose(np.diagonal(cosines), [1.0, 1.0, 0.0, 1.0])
    summary = conflict_summary(jacobian @ jacobian.T)
    assert summary["conflicting_pairs"] == 2.0  # (0, 1) and (1, 3)
    assert summary["conflict_fraction"] == pytest.approx(2 / 6)
    assert conflict_summary(np.eye(1))["conflicting_pairs"] == 0.0


def test_step_row_logs_pairs_only_for_few_tasks():
    tasks = tuple(mtl.regression(f"t{i}") for i in range(3))
    row = step_row(tasks, np.eye(3))
    assert row["train/gradient/cos/t0|t2"] == 0.0 and row["train/gradient/norm/t1"] == 1.0
    many = tuple(mtl.regression(f"t{i}") for i in range(9))
    assert not any("/cos/" in k for k in step_row(many, np.eye(9)))


def _twin_data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    y = (x @ rng.normal(size=6)).astype(np.float32)
    return {"x": x, "a": y, "twin": y.copy(), "opposite": -y}


def test_affinity_is_the_lookahead_loss_change_and_sees_help_and_harm():
    tasks = (mtl.regression("a"), mtl.regression("opposite"), mtl.regression("twin"))
    model = hard_sharing(MLP((16,)), tasks)
    batch = _twin_data()
    params = model.init(jax.random.PRNGKey(0), batch["x"][:2])["params"]
    z = np.asarray(make_affinity_step(model, tasks, "x")(params, batch, 0.05))

    def losses(p):
        return task_losses(tasks, model.apply({"params": p}, batch["x"]), batch)[0]

    grads = jit_once(jax.grad(lambda p: losses(p)[0]))(params)
    ahead = {**params, "trunk": jax.tree.map(lambda p, g: p - 0.05 * g, params["trunk"], grads["trunk"])}
    np.testing.assert_allclose(z[0], 1 - losses(ahead) / losses(params), rtol=1e-4, atol=1e-6)
    assert z[0, 2] > 0 and z[0, 1] < 0  # a step on "a" helps its twin and hurts its opposite
    partners = strongest_partners(z, tasks)
    assert partners["twin"]["helped_most_by"] == "a" and partners["twin"]["hurt_most_by"] == "opposite"
    assert "| a |" in affinity_table(z, tasks)
    for group in (1, 2):  # lookaheads vmapped in groups: the same matrix
        np.testing.assert_allclose(np.asarray(make_affinity_step(model, tasks, "x", group)(params, batch, 0.05)), z,
                                   rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="tasks_at_once"):
        make_affinity_step(model, tasks, "x", 0)


def _fit(tmp_path, name, epochs, resume=False):
    tasks = (mtl.regression("a"), mtl.regression("opposite"), mtl.regression("twin"))
    model = hard_sharing(MLP((16,)), tasks)
    return mtl.fit(model, tasks, _twin_data(48), epochs=epochs, batch_size=8, input_key="x",
                   optimizer=optax.sgd(0.01), weighting=observed(static((1.0, 1.0, 1.0)), "parameter"),
                   progress=False, workdir=tmp_path / name, resume=resume, log_every_steps=1,
                   affinity_every_steps=2, affinity_learning_rate=0.05, tensorboard=False)


def test_fit_logs_conflict_and_affinity_and_resumes_them_exactly(tmp_path):
    _, history = _fit(tmp_path, "straight", 3)
    workdir = tmp_path / "straight"
    assert {"gradient_conflict.png", "affinity.png", "affinity.json"} <= {p.name for p in workdir.iterdir()}
    assert len(history["train/gradient_cosines"]) == 3 and len(history["affinity"]) == 3
    cosines = np.asarray(history["train/gradient_cosines"][-1])
    np.testing.assert_allclose(cosines, cosines.T, atol=1e-12)
    np.testing.assert_allclose(np.diagonal(cosines), 1.0)
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "train/gradient/conflicting_pairs" in r]
    assert len(steps) == 18  # every step (6 per epoch) is logged
    last_epoch = [r["train/gradient/conflicting_pairs"] for r in steps[-6:]]
    assert history["train/conflicting_pairs"][-1] == pytest.approx(np.mean(last_epoch))
    np.testing.assert_allclose(np.mean([r["train/gradient/cos/a|opposite"] for r in steps[-6:]]), cosines[0, 1],
                               rtol=1e-5)
    assert any("affinity/a->twin" in r for r in rows)
    saved = json.loads((workdir / "affinity.json").read_text())
    assert saved["measurements"] == 9 and saved["partners"]["twin"]["hurt_most_by"] == "opposite"

    _fit(tmp_path, "resumed", 2)
    _fit(tmp_path, "resumed", 3, resume=True)
    resumed = json.loads((tmp_path / "resumed" / "affinity.json").read_text())
    np.testing.assert_allclose(resumed["affinity"], saved["affinity"], rtol=1e-6)
    assert resumed["measurements"] == 9


def test_affinity_needs_a_step_size():
    tasks = (mtl.regression("a"),)
    with pytest.raises(ValueError, match="affinity_learning_rate"):
        mtl.fit(hard_sharing(MLP((4,)), tasks), tasks, _twin_data(16), epochs=1, input_key="x",
                affinity_every_steps=1, progress=False)


def test_gradient_diagnostics_leave_the_training_unchanged():
    tasks = (mtl.regression("a"), mtl.regression("twin"))
    model = hard_sharing(MLP((8,)), tasks)
    runs = []
    for weighting in (static((1.0, 1.0)), observed(static((1.0, 1.0)), "feature"),
                      observed(static((1.0, 1.0)), "parameter")):
        state, _ = mtl.fit(model, tasks, _twin_data(32), epochs=2, batch_size=8, input_key="x",
                           optimizer=optax.sgd(0.01), weighting=weighting, progress=False)
        runs.append(state.params)
    for other in runs[1:]:
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6), runs[0], other)
    assert jnp.all(jnp.isfinite(jax.tree.leaves(runs[0])[0]))
