import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtl_jax as mtl
from mtl_jax import losses
from mtl_jax.tasks import task_losses
from conftest import jit_once


def test_elementwise_losses_match_hand_computed_values():
    p, t = jnp.array([1.0, 2.0, -1.0]), jnp.array([0.0, 4.0, -1.0])
    np.testing.assert_allclose(losses.mse(p, t), [1.0, 4.0, 0.0])
    np.testing.assert_allclose(losses.l1(p, t), [1.0, 2.0, 0.0])
    np.testing.assert_allclose(losses.huber(p, t, delta=1.0), [0.5, 1.5, 0.0])
    logits = jnp.array([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0]])
    expected = [np.log(3.0), -2.0 + np.log(np.exp(2.0) + 2.0)]
    np.testing.assert_allclose(losses.softmax_cross_entropy(logits, jnp.array([1, 0])), expected, rtol=1e-6)
    z = jnp.array([0.0, 2.0])
    np.testing.assert_allclose(losses.sigmoid_binary_cross_entropy(z, jnp.array([1.0, 0.0])),
                               [np.log(2.0), np.log(1 + np.exp(2.0))], rtol=1e-6)


@pytest.mark.parametrize("task,prediction,target,expected,count", [
    # NaN regression targets are ignored: mean of (1-0)^2 and (3-1)^2
    (mtl.regression("y"), [[1.0], [2.0], [3.0]], [0.0, np.nan, 1.0], 2.5, 2),
    # label -1 is ignored: mean CE over the two labelled rows
    (mtl.classification("c", 2), [[0.0, 0.0], [5.0, 0.0], [0.0, 0.0]], [0, -1, 1], np.log(2.0), 2),
    # binary: NaN and -1 both count as missing
    (mtl.binary("b"), [[0.0], [3.0], [1.0]], [1.0, np.nan, -1.0], np.log(2.0), 1),
])
def test_missing_labels_are_excluded_from_the_mean(task, prediction, target, expected, count):
    batch = {task.target_key: jnp.array(target)}
    mean, _, counts = task_losses([task], {task.name: jnp.array(prediction)}, batch)
    np.testing.assert_allclose(mean[0], expected, rtol=1e-6)
    assert counts[0] == count


def test_explicit_mask_and_padding_mask_combine():
    task = mtl.regression("y")
    batch = {"y": jnp.array([0.0, 0.0, 0.0, 0.0]), "y_mask": jnp.array([1, 0, 1, 1]),
             "_valid": jnp.array([1.0, 1.0, 1.0, 0.0])}
    pred = jnp.array([[1.0], [10.0], [3.0], [100.0]])
    mean, sums, counts = task_losses([task], {"y": pred}, batch)
    np.testing.assert_allclose(mean[0], (1.0 + 9.0) / 2)
    assert counts[0] == 2


@pytest.mark.parametrize("task,pred_shape,target", [
    (mtl.regression("t"), (3, 1), np.full(3, np.nan, np.float32)),
    (mtl.classification("t", 4), (3, 4), np.full(3, -1, np.int32)),
    (mtl.multilabel("t", 2), (3, 2), np.full((3, 2), np.nan, np.float32)),
    (mtl.segmentation("t", 3), (2, 4, 4, 3), np.full((2, 4, 4), -1, np.int32)),
    (mtl.depth("t"), (2, 4, 4, 1), np.full((2, 4, 4), np.nan, np.float32)),
])
def test_all_missing_batch_gives_zero_loss_and_zero_finite_gradient(task, pred_shape, target):
    def loss(pred):
        mean, _, _ = task_losses([task], {"t": pred}, {"t": jnp.asarray(target)})
        return mean[0]

    pred = jax.random.normal(jax.random.PRNGKey(0), pred_shape)
    value, grad = jit_once(jax.value_and_grad(loss))(pred)  # one program, not op by op
    assert value == 0.0
    chex.assert_tree_all_finite(grad)
    np.testing.assert_array_equal(grad, 0.0)


def test_dense_losses_average_over_valid_pixels():
    seg = mtl.segmentation("s", 2)
    logits = jnp.zeros((1, 2, 2, 2)).at[0, 0, 0, 0].set(10.0)
    labels = jnp.array([[[0, -1], [1, 1]]])
    mean, _, counts = task_losses([seg], {"s": logits}, {"s": labels})
    assert counts[0] == 3
    expected = (np.log(1 + np.exp(-10.0)) + 2 * np.log(2.0)) / 3
    np.testing.assert_allclose(mean[0], expected, rtol=1e-5)
    dep = mtl.depth("d")
    mean, _, _ = task_losses([dep], {"d": jnp.ones((1, 2, 2, 1))}, {"d": jnp.array([[[2.0, np.nan], [1.0, 0.5]]])})
    np.testing.assert_allclose(mean[0], (1.0 + 0.0 + 0.5) / 3)


def test_total_loss_is_lambda_weighted_sum():
    tasks = [mtl.regression("a", weight=1.0), mtl.classification("b", 3, weight=0.5)]
    preds = {"a": jnp.array([[1.0], [3.0]]), "b": jnp.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])}
    batch = {"a": jnp.array([0.0, 1.0]), "b": jnp.array([0, 2])}
    mean, _, _ = task_losses(tasks, preds, batch)
    weights = mtl.tasks.static_weights(tasks)
    ce = (losses.softmax_cross_entropy(preds["b"], batch["b"])).mean()
    np.testing.assert_allclose(jnp.sum(weights * mean), 2.5 + 0.5 * ce, rtol=1e-6)


def test_unknown_loss_and_bad_task_definitions_are_refused():
    with pytest.raises(ValueError, match="unknown loss 'msq'"):
        mtl.regression("y", loss="msq")
    with pytest.raises(ValueError, match="unknown kind"):
        mtl.Task("y", "ranking", 1)
    with pytest.raises(ValueError, match="unknown metric 'rmsee'"):
        mtl.regression("y", metrics=("rmsee",))
    with pytest.raises(ValueError, match="identifier"):
        mtl.regression("bad/name")
