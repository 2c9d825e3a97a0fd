"""Mean and sum of the task gradients: the baselines every aggregator is compared with.

``mean``: ``c_i = 1/T``;  ``sum``: ``c_i = 1`` (equal weighting, EW).
"""
from __future__ import annotations

import functools

import jax.numpy as jnp

from mtl_jax.aggregation.base import Aggregator, stateless
from mtl_jax.registry import AGGREGATORS


@AGGREGATORS.register("mean", "the mean of the task gradients")
@functools.lru_cache(maxsize=1)
def mean() -> Aggregator:
    return stateless(lambda gramian, key: jnp.full((gramian.shape[0],), 1.0 / gramian.shape[0], gramian.dtype))


@AGGREGATORS.register("sum", "the sum of the task gradients (equal weighting)")
@functools.lru_cache(maxsize=1)
def sum_() -> Aggregator:
    return stateless(lambda gramian, key: jnp.ones((gramian.shape[0],), gramian.dtype))
