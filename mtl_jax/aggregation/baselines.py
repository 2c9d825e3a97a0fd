"""Mean and sum of the task gradients: the baselines every aggregator is compared with.

``mean``: ``c_i = 1/T``;  ``sum``: ``c_i = 1`` (equal weighting, EW); over the present tasks
(see :mod:`mtl_jax.balancing`).
"""
from __future__ import annotations

import jax.numpy as jnp

from mtl_jax.balancing import Method, from_gramian
from mtl_jax.caching import by_value
from mtl_jax.registry import AGGREGATORS


@AGGREGATORS.register("mean", "the mean of the task gradients")
@by_value
def mean() -> Method:
    return from_gramian(lambda gramian, key, present: present.astype(gramian.dtype) / jnp.maximum(jnp.sum(present), 1))


@AGGREGATORS.register("sum", "the sum of the task gradients (equal weighting)")
@by_value
def sum_() -> Method:
    return from_gramian(lambda gramian, key, present: present.astype(gramian.dtype))
