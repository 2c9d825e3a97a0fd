"""Gradient-aggregation methods for task conflict, as functions of the tasks' Gramian.

Importing this package registers every aggregator by name (``mtl-jax list``).
"""
from mtl_jax.aggregation.base import Aggregator, aggregated
from mtl_jax.aggregation.baselines import mean, sum_
from mtl_jax.aggregation.imtl_g import imtl_g
from mtl_jax.aggregation.mgda import mgda
from mtl_jax.aggregation.pcgrad import pcgrad
from mtl_jax.aggregation.upgrad import dualproj, upgrad

__all__ = ["Aggregator", "aggregated", "mean", "sum_", "imtl_g", "mgda", "pcgrad", "dualproj", "upgrad"]
