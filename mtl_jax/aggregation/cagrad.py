"""CAGrad: conflict-averse gradient descent (Liu, Liu, Jin, Stone & Liu 2021).

Within a ball around the mean gradient ``g_0 = (1/T) sum_i g_i``, take the direction that
most improves the worst task:

    max_d min_i <g_i, d>   s.t.  ||d - g_0|| <= c ||g_0||.

Its dual is a small problem over the simplex: with ``g_w = sum_i w_i g_i`` and
``phi = c^2 ||g_0||^2``,

    w* = argmin_{w in simplex}  <g_w, g_0> + sqrt(phi) ||g_w||,
    d  = g_0 + sqrt(phi) / ||g_w*|| g_w*,

every term of which is read from the Gramian (``<g_w, g_0> = w^T G 1 / T``,
``||g_w||^2 = w^T G w``). The objective is convex but not smooth, so it is minimised by
entropic mirror descent on the simplex (exponentiated gradient, step ~ 1/sqrt(k), best
iterate kept). ``c = 0`` gives the mean; larger ``c`` moves towards MGDA. As in the authors'
code, ``rescale=1`` divides ``d`` by ``1 + c^2`` (0: no rescaling; 2: by ``1 + c``).

References: B. Liu, X. Liu, X. Jin, P. Stone, Q. Liu. "Conflict-Averse Gradient Descent for
Multi-task Learning", NeurIPS 2021.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from mtl_jax.aggregation.base import Aggregator, stateless
from mtl_jax.registry import AGGREGATORS

ITERATIONS = 300


def _dual_weights(gramian, c: float, iterations: int = ITERATIONS):
    n = gramian.shape[0]
    scale = jnp.maximum(jnp.trace(gramian) / n, 1e-30)
    g = gramian / scale  # the minimiser is invariant to scaling G
    mean_dots = jnp.mean(g, axis=1)  # <g_i, g_0>
    radius = c * jnp.sqrt(jnp.maximum(jnp.mean(g), 0.0))  # sqrt(phi) = c ||g_0||

    def objective_and_gradient(w):
        norm = jnp.sqrt(jnp.maximum(w @ g @ w, 1e-20))
        return w @ mean_dots + radius * norm, mean_dots + radius * (g @ w) / norm

    def body(k, carry):
        w, best, best_value = carry
        value, gradient = objective_and_gradient(w)
        best, best_value = jax.lax.cond(value < best_value, lambda: (w, value), lambda: (best, best_value))
        step = 1.0 / jnp.sqrt(k + 1.0)
        logits = jnp.log(jnp.maximum(w, 1e-30)) - step * gradient / jnp.maximum(jnp.max(jnp.abs(gradient)), 1e-30)
        return jax.nn.softmax(logits), best, best_value

    start = jnp.full((n,), 1.0 / n, gramian.dtype)
    w, best, best_value = jax.lax.fori_loop(0, iterations, body, (start, start, jnp.asarray(jnp.inf, gramian.dtype)))
    value, _ = objective_and_gradient(w)
    return jnp.where(value < best_value, w, best)


def cagrad_coefficients(gramian, c: float = 0.4, rescale: int = 1):
    n = gramian.shape[0]
    mean = jnp.full((n,), 1.0 / n, gramian.dtype)
    if c == 0:
        return mean
    w = _dual_weights(gramian, c)
    mean_norm = jnp.sqrt(jnp.maximum(mean @ gramian @ mean, 0.0))
    w_norm = jnp.sqrt(jnp.maximum(w @ gramian @ w, 0.0))
    coefficients = mean + jnp.where(w_norm > 1e-15, c * mean_norm / jnp.maximum(w_norm, 1e-15), 0.0) * w
    divisor = {0: 1.0, 1: 1.0 + c ** 2, 2: 1.0 + c}[rescale]
    return coefficients / divisor


@AGGREGATORS.register("cagrad", "CAGrad (Liu et al. 2021), c: best worst-task improvement within a ball of radius "
                                "c ||mean|| around the mean gradient")
@functools.lru_cache(maxsize=16)
def cagrad(c: float = 0.4, rescale: int = 1) -> Aggregator:
    if c < 0:
        raise ValueError(f"CAGrad's c must be >= 0, got {c}")
    if rescale not in (0, 1, 2):
        raise ValueError(f"CAGrad's rescale must be 0, 1 or 2, got {rescale}")
    return stateless(lambda gramian, key: cagrad_coefficients(gramian, float(c), int(rescale)))
