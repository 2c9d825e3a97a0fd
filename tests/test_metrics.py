import itertools

import jax.numpy as jnp
import numpy as np
import pytest

import mtl_jax as mtl
from mtl_jax import metrics
from mtl_jax.tasks import prepare
from mtl_jax.train.loop import summarize
from mtl_jax.train.step import metric_stats


def _epoch_metrics(task, predictions, targets, batch_size):
    """Metrics of one epoch computed from uneven, padded batches, as the loops do."""
    outputs, n = [], len(targets)
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        pad = batch_size - (stop - start)
        pred = np.concatenate([predictions[start:stop], np.repeat(predictions[:1], pad, 0)])
        targ = np.concatenate([targets[start:stop], np.repeat(targets[:1], pad, 0)])
        valid = np.r_[np.ones(stop - start), np.zeros(pad)].astype(np.float32)
        batch = {task.target_key: jnp.asarray(targ), "_valid": jnp.asarray(valid)}
        outputs.append({"loss_sum": np.zeros(1), "loss_count": np.ones(1),
                        "stats": metric_stats([task], {task.name: jnp.asarray(pred)}, batch)})
    return summarize([task], outputs)


@pytest.mark.parametrize("batch_size", [7, 16, 100])
def test_regression_metrics_are_exact_over_uneven_batches(batch_size):
    rng = np.random.default_rng(0)
    y = rng.normal(size=53).astype(np.float32)
    y[[3, 20]] = np.nan
    p = (y + rng.normal(scale=0.5, size=53)).astype(np.float32)
    p[np.isnan(p)] = 0.0
    got = _epoch_metrics(mtl.regression("y"), p[:, None], y, batch_size)
    ok = ~np.isnan(y)
    err = p[ok] - y[ok]
    np.testing.assert_allclose(got["y/rmse"], np.sqrt(np.mean(err**2)), rtol=1e-5)
    np.testing.assert_allclose(got["y/mae"], np.mean(np.abs(err)), rtol=1e-5)
    r2 = 1 - np.sum(err**2) / np.sum((y[ok] - y[ok].mean()) ** 2)
    np.testing.assert_allclose(got["y/r2"], r2, rtol=1e-4)


def _macro_f1_reference(y, p, classes):
    scores = []
    for c in classes:
        tp, fp, fn = np.sum((p == c) & (y == c)), np.sum((p == c) & (y != c)), np.sum((p != c) & (y == c))
        if tp + fp + fn:
            scores.append(2 * tp / (2 * tp + fp + fn))
    return np.mean(scores)


@pytest.mark.parametrize("batch_size", [5, 32])
def test_classification_metrics_are_exact_and_honour_missing_labels(batch_size):
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, size=41).astype(np.int32)
    y[[0, 7, 8]] = -1
    logits = rng.normal(size=(41, 4)).astype(np.float32)
    logits[np.arange(41), np.maximum(y, 0)] += 1.0
    got = _epoch_metrics(mtl.classification("c", 4), logits, y, batch_size)
    ok, p = y >= 0, logits.argmax(1)
    np.testing.assert_allclose(got["c/accuracy"], np.mean(p[ok] == y[ok]), rtol=1e-6)
    np.testing.assert_allclose(got["c/macro_f1"], _macro_f1_reference(y[ok], p[ok], range(4)), rtol=1e-6)


def _auc_reference(scores, labels):
    pos, neg = scores[labels == 1], scores[labels == 0]
    pairs = [(1.0 if a > b else 0.5 if a == b else 0.0) for a, b in itertools.product(pos, neg)]
    return np.mean(pairs)


def test_auc_is_the_exact_pairwise_statistic_with_ties():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, size=37).astype(np.float32)
    scores = np.round(rng.normal(size=37) + labels, 1).astype(np.float32)  # rounding makes ties
    labels[5] = np.nan
    got = _epoch_metrics(mtl.binary("b"), scores[:, None], labels, 8)
    ok = ~np.isnan(labels)
    np.testing.assert_allclose(got["b/auc"], _auc_reference(scores[ok], labels[ok]), rtol=1e-9)
    assert np.isnan(metrics.roc_auc(np.ones(3), np.ones(3)))


def test_multilabel_and_dense_metrics():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, size=(20, 3)).astype(np.float32)
    y[0, 1] = np.nan
    logits = rng.normal(size=(20, 3)).astype(np.float32)
    got = _epoch_metrics(mtl.multilabel("m", 3), logits, y, 6)
    ok, p = ~np.isnan(y), (logits > 0).astype(np.float32)
    np.testing.assert_allclose(got["m/multilabel_accuracy"], np.mean(p[ok] == y[ok]), rtol=1e-6)
    tp, fp, fn = np.sum(p[ok] * y[ok]), np.sum(p[ok] * (1 - y[ok])), np.sum((1 - p[ok]) * y[ok])
    np.testing.assert_allclose(got["m/multilabel_f1"], 2 * tp / (2 * tp + fp + fn), rtol=1e-6)

    seg = rng.integers(-1, 3, size=(6, 4, 4)).astype(np.int32)
    seg_logits = rng.normal(size=(6, 4, 4, 3)).astype(np.float32)
    got = _epoch_metrics(mtl.segmentation("s", 3), seg_logits, seg, 4)
    ok, p = seg >= 0, seg_logits.argmax(-1)
    np.testing.assert_allclose(got["s/pixel_accuracy"], np.mean(p[ok] == seg[ok]), rtol=1e-6)
    ious = [np.sum((p[ok] == c) & (seg[ok] == c)) / np.sum((p[ok] == c) | (seg[ok] == c)) for c in range(3)]
    np.testing.assert_allclose(got["s/miou"], np.mean(ious), rtol=1e-6)


def test_prepare_aligns_shapes_and_masks():
    task = mtl.depth("d")
    pred, target, mask = prepare(task, jnp.ones((2, 3, 3, 1)), {"d": jnp.full((2, 3, 3), np.nan)})
    assert pred.shape == target.shape == mask.shape == (2, 3, 3)
    assert not mask.any() and np.isfinite(target).all()


def test_delta_m_follows_each_metrics_direction():
    baselines = {"price/rmse": 0.5, "kind/accuracy": 0.8}
    results = {"price/rmse": 0.4, "kind/accuracy": 0.88}  # both 20% / 10% better
    np.testing.assert_allclose(metrics.delta_m(results, baselines), 100 * (0.2 + 0.1) / 2)
    worse = {"price/rmse": 0.6, "kind/accuracy": 0.8}
    np.testing.assert_allclose(metrics.delta_m(worse, baselines), -10.0)
    three = {"a/rmse": 1.0, "a/mae": 1.0, "b/accuracy": 0.5}
    res = {"a/rmse": 0.9, "a/mae": 0.9, "b/accuracy": 0.55}
    np.testing.assert_allclose(metrics.delta_m(res, three), 10.0)
    np.testing.assert_allclose(metrics.delta_m(res, three, per_task=True), 10.0)
    res["b/accuracy"] = 0.5
    np.testing.assert_allclose(metrics.delta_m(res, three), 100 * 0.2 / 3)
    np.testing.assert_allclose(metrics.delta_m(res, three, per_task=True), 5.0)
    with pytest.raises(KeyError, match="lack"):
        metrics.delta_m({}, baselines)
