"""Gradient-aggregation methods for task conflict, as functions of the tasks' Gramian (or, for
GradDrop, of the per-task gradients at the shared representation). Each is a
:class:`~mtl_jax.balancing.Method` like the loss weightings: ``update(info, state, key)`` reads
``info.gramian`` (or ``info.jacobian``) and returns the coefficients ``c`` of the direction
``d = sum_i c_i g_i``; :func:`~mtl_jax.balancing.chain` puts a weighting before one.

Importing this package registers every aggregator by name (``mtl-jax list``).
"""
from mtl_jax.aggregation.aligned_mtl import aligned_mtl
from mtl_jax.aggregation.baselines import mean, sum_
from mtl_jax.aggregation.cagrad import cagrad
from mtl_jax.aggregation.conflict_free import config
from mtl_jax.aggregation.graddrop import graddrop
from mtl_jax.aggregation.gradvac import gradvac
from mtl_jax.aggregation.imtl_g import imtl_g
from mtl_jax.aggregation.mgda import mgda
from mtl_jax.aggregation.nash_mtl import nash_mtl
from mtl_jax.aggregation.pcgrad import pcgrad
from mtl_jax.aggregation.upgrad import dualproj, upgrad

__all__ = ["aligned_mtl", "cagrad", "config", "graddrop",
           "gradvac", "imtl_g", "mean", "mgda", "nash_mtl", "pcgrad", "sum_", "dualproj", "upgrad"]
