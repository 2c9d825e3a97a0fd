"""Pure per-element losses with missing-label masks.

Every loss here has the signature ``loss(prediction, target) -> elementwise`` and is
called on a *sanitised* target (see :func:`mtl_jax.tasks.prepare`): missing labels
(NaN targets, label ``-1``, an explicit ``<target>_mask`` key, padding) have already
been replaced by a harmless value and are excluded by the mask, so neither the loss
nor its gradient ever sees a NaN. :func:`masked_sum` reduces an elementwise loss to
``(sum over valid elements, number of valid elements)``; the task loss is their ratio,
and a batch with no valid label gives ``0 / max(0, 1) = 0`` with a zero gradient.

Shapes: regression predictions ``[B, d]`` against targets ``[B, d]`` (``[B]`` when
``d == 1``); class logits ``[B, C]`` against integer labels ``[B]``; dense outputs
``[B, H, W, C]`` against ``[B, H, W]`` maps.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

LossFn = Callable[[jax.Array, jax.Array], jax.Array]


def mse(prediction: jax.Array, target: jax.Array) -> jax.Array:
    """Squared error ``(y_hat - y)^2`` per element."""
    return optax.squared_error(prediction, target)


def l1(prediction: jax.Array, target: jax.Array) -> jax.Array:
    """Absolute error ``|y_hat - y|`` per element."""
    return jnp.abs(prediction - target)


def huber(prediction: jax.Array, target: jax.Array, delta: float = 1.0) -> jax.Array:
    """Huber loss: ``r^2 / 2`` for ``|r| <= delta``, ``delta (|r| - delta / 2)`` beyond."""
    return optax.huber_loss(prediction, target, delta=delta)


def softmax_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """``-log softmax(logits)[label]`` for integer labels; logits ``[..., C]``, labels ``[...]``."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def sigmoid_binary_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """``-y log sigmoid(z) - (1 - y) log(1 - sigmoid(z))`` per element (binary or multilabel)."""
    return optax.sigmoid_binary_cross_entropy(logits, labels.astype(logits.dtype))


LOSSES: dict[str, LossFn] = {
    "mse": mse,
    "l1": l1,
    "huber": huber,
    "softmax_cross_entropy": softmax_cross_entropy,
    "sigmoid_binary_cross_entropy": sigmoid_binary_cross_entropy,
}


def get_loss(name_or_fn: str | LossFn) -> LossFn:
    """Looks a loss up by name; callables are returned unchanged."""
    if callable(name_or_fn):
        return name_or_fn
    try:
        return LOSSES[name_or_fn]
    except KeyError:
        raise ValueError(f"unknown loss {name_or_fn!r}; known losses: {sorted(LOSSES)}") from None


def masked_sum(elementwise: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Returns ``(sum of elementwise over mask, number of masked-in elements)`` in float32."""
    mask = mask.astype(jnp.float32)
    values = jnp.where(mask > 0, elementwise.astype(jnp.float32), 0.0)
    return jnp.sum(values * mask), jnp.sum(mask)


def safe_mean(total: jax.Array, count: jax.Array) -> jax.Array:
    """``total / count``, and 0 where nothing was counted (never NaN)."""
    return total / jnp.maximum(count, 1.0)
