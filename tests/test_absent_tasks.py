"""A task absent from a step (no labelled element in the batch: loss 0, zero gradient) contributes
nothing and poisons no method: every registered weighting and aggregator gives the present tasks
the weights it gives the problem of the present tasks alone, the absent task weight 0, and none
of the absent task's state moves."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mtl_jax as mtl
from mtl_jax import experiment  # noqa: F401 - registers every named method
from mtl_jax.balancing import Direction, Info, gramian_of
from mtl_jax.registry import AGGREGATORS, WEIGHTINGS
from mtl_jax.experiment import make_weighting
from mtl_jax.models.sharing import hard_sharing
from mtl_jax.models.trunks import MLP
from mtl_jax.train.state import create_train_state
from mtl_jax.train.step import make_train_step

from conftest import jit_once

KEY = jax.random.PRNGKey(3)
TASKS = (mtl.regression("a"), mtl.classification("b", 3), mtl.regression("c", weight=0.5),
         mtl.classification("d", 2, weight=2.0))
# Methods whose answer for three or more tasks depends on a random task order (drawn per task
# count): compared on two present tasks, where the order cannot matter.
ORDER_DEPENDENT = ("pcgrad", "gradvac")
RANDOM_WEIGHTS = ("random_weighting",)


def _build(kind, name, tasks, steps_per_epoch=2):
    if kind == "weighting":
        return WEIGHTINGS.get(name)(tasks, **({"steps_per_epoch": steps_per_epoch} if name == "dwa" else {}))
    return AGGREGATORS.get(name)()


def _methods():
    return ([("weighting", n) for n, _ in WEIGHTINGS.describe()]
            + [("aggregator", n) for n, _ in AGGREGATORS.describe()])


def _infos(num_tasks, absent, steps, seed=0):
    """Steps of per-task information where the tasks in ``absent`` (per step) have loss 0 and zero
    gradients, as the train step produces them; plus the same with those tasks removed."""
    rng = np.random.default_rng(seed)
    full, sub = [], []
    for step in range(steps):
        jacobian = rng.normal(size=(num_tasks, 3, 6))
        jacobian[1] = -0.7 * jacobian[0] + 0.4 * jacobian[1]  # a conflicting pair
        losses = rng.uniform(0.2, 3.0, size=num_tasks)
        gone = absent[step]
        present = np.array([i not in gone for i in range(num_tasks)])
        jacobian[~present], losses[~present] = 0.0, 0.0
        j, l_ = jnp.asarray(jacobian, jnp.float32), jnp.asarray(losses, jnp.float32)
        full.append(Info(l_, gramian_of(j), j, jnp.asarray(present)))
        sub.append(Info(l_[present], gramian_of(j[present]), j[present]) if present.any() else None)
    return full, sub


def _weights(out):
    return np.asarray(out.weights if isinstance(out, Direction) else out)


@pytest.mark.parametrize("kind,name", _methods(), ids=[f"{k}:{n}" for k, n in _methods()])
def test_a_task_always_absent_leaves_the_method_of_the_present_tasks(kind, name):
    num_tasks = 3 if name in ORDER_DEPENDENT else 4
    tasks = TASKS[:num_tasks]
    absent = 1  # in the middle: the methods that single out a first task must not pick it
    keep = [i for i in range(num_tasks) if i != absent]
    full_method = _build(kind, name, tasks)
    sub_method = _build(kind, name, tuple(tasks[i] for i in keep))
    full, sub = _infos(num_tasks, [{absent}] * 5, 5)
    full_state, sub_state = full_method.init(num_tasks), sub_method.init(num_tasks - 1)
    update_full, update_sub = jit_once(full_method.update), jit_once(sub_method.update)
    for step, (info, sub_info) in enumerate(zip(full, sub)):
        key = jax.random.fold_in(KEY, step)
        out, full_state = update_full(info, full_state, key)
        sub_out, sub_state = update_sub(sub_info, sub_state, key)
        weights, expected = _weights(out), _weights(sub_out)
        assert weights[absent] == 0.0, (name, step, weights)
        if name in RANDOM_WEIGHTS:  # another draw, but the same rule: the present tasks share T - 1
            np.testing.assert_allclose(weights[keep].sum(), expected.sum(), rtol=1e-5)
            continue
        np.testing.assert_allclose(weights[keep], expected, rtol=2e-4, atol=1e-6, err_msg=f"{name} at step {step}")
        if isinstance(out, Direction):
            for got, want in zip(jax.tree.leaves(out.cotangent), jax.tree.leaves(sub_out.cotangent)):
                np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def _task_entries(state, task, num_tasks):
    """The entries of every per-task leaf of ``state`` that belong to ``task``."""
    out = []
    for leaf in jax.tree.leaves(state):
        leaf = np.asarray(leaf)
        if leaf.ndim >= 1 and leaf.shape[0] == num_tasks:
            out.append(leaf[task])
            if leaf.ndim == 2 and leaf.shape[1] == num_tasks:  # pairwise (GradVac's goals)
                out.append(leaf[:, task])
    return out


# Nash-MTL's state is its last answer (reused by update_every), not something it learns.
CACHED_ANSWERS = ("nash_mtl",)


@pytest.mark.parametrize("kind,name", _methods(), ids=[f"{k}:{n}" for k, n in _methods()])
def test_a_task_absent_for_some_steps_keeps_its_state_and_nothing_turns_non_finite(kind, name):
    method = _build(kind, name, TASKS, steps_per_epoch=100)  # DWA's epoch ends: test_dwa_...
    absent = [set(), {2}, {2, 0}, set(), {2}, {0, 1, 2, 3}, set()]  # the last but one: nothing at all
    full, _ = _infos(4, absent, len(absent), seed=1)
    state, update = method.init(4), jit_once(method.update)
    for step, info in enumerate(full):
        before = state
        out, state = update(info, state, jax.random.fold_in(KEY, step))
        weights = _weights(out)
        assert np.isfinite(weights).all() and all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state)), \
            (name, step)
        for task in absent[step]:
            assert weights[task] == 0.0, (name, step, weights)
            if name not in CACHED_ANSWERS:
                for old, new in zip(_task_entries(before, task, 4), _task_entries(state, task, 4)):
                    np.testing.assert_array_equal(old, new, err_msg=f"{name}: absent task {task}'s state moved")


@pytest.mark.parametrize("weighting,level", [("uncertainty", None), ("mgda", "feature"),
                                             ("upgrad", "parameter")])
def test_the_train_step_treats_a_task_without_labels_in_the_batch_as_absent(weighting, level):
    """Task ``c`` has no label in the batch: before, MGDA's min-norm point was its zero gradient
    (the step moved nothing) and UW drove its variance to 0."""
    tasks = (mtl.regression("a"), mtl.classification("b", 3), mtl.regression("c"))
    model = hard_sharing(MLP(features=(8,)), tasks)
    rng = np.random.default_rng(0)
    batch = {"x": jnp.asarray(rng.normal(size=(16, 5)), jnp.float32),
             "a": jnp.asarray(rng.normal(size=16), jnp.float32),
             "b": jnp.asarray(rng.integers(0, 3, size=16), jnp.int32),
             "c": jnp.full((16,), jnp.nan, jnp.float32),  # no label for c in this batch
             "mask": jnp.ones((16,), bool)}
    method = make_weighting("equal" if level else weighting, tasks, {}, steps_per_epoch=4,
                            aggregator=weighting if level else "none", level=level or "feature")
    optimizer = optax.sgd(0.1)
    state = create_train_state(model, tasks, optimizer, method, batch["x"], seed=0)
    before = jax.tree.map(np.asarray, state.weighting_state)
    step = make_train_step(model, tasks, optimizer, method, "x")
    state, out = step(state, batch)
    weights = np.asarray(out["weights"])
    assert weights[2] == 0.0 and (weights[:2] > 0).all(), weights
    assert float(out["grad_norm"]) > 0 and bool(out["finite"])
    if weighting == "uncertainty":
        assert np.asarray(state.weighting_state.log_variance)[2] == before.log_variance[2]
        assert (np.asarray(state.weighting_state.log_variance)[:2] != before.log_variance[:2]).all()


def test_dwa_averages_each_task_over_the_steps_it_was_present_and_keeps_the_means_of_a_task_absent_all_epoch():
    method = WEIGHTINGS.get("dwa")(TASKS[:3], steps_per_epoch=2)
    state = method.init(3)
    losses = [[1.0, 2.0, 4.0], [3.0, 0.0, 2.0], [2.0, 0.0, 0.0], [2.0, 0.0, 0.0]]
    present = [[1, 1, 1], [1, 0, 1], [1, 0, 0], [1, 0, 0]]
    for step in range(4):
        _, state = method.update(Info(jnp.asarray(losses[step]), present=jnp.asarray(present[step], bool)), state, KEY)
    # the first epoch's means (over the steps each task was present): a (1+3)/2, b 2/1, c (4+2)/2
    _, state = method.update(Info(jnp.ones(3), present=jnp.ones(3, bool)), state, KEY)
    np.testing.assert_allclose(state.last, [2.0, 2.0, 3.0])   # b and c absent all of epoch 2: kept
    np.testing.assert_allclose(state.before_last, [2.0, 0.0, 0.0])
