"""Loss-weighting methods as ``(init, update)`` pairs (the protocol: :mod:`mtl_jax.balancing`).

Importing this package registers every method by name (``mtl-jax list``).
"""
from mtl_jax.weighting.db_mtl import db_mtl
from mtl_jax.weighting.dwa import dwa
from mtl_jax.weighting.famo import famo
from mtl_jax.weighting.geometric import geometric
from mtl_jax.weighting.gradnorm import gradnorm
from mtl_jax.weighting.imtl_l import imtl_l
from mtl_jax.weighting.log_losses import log_losses
from mtl_jax.weighting.rlw import random_weighting
from mtl_jax.weighting.static import static
from mtl_jax.weighting.uncertainty import uncertainty

__all__ = ["db_mtl", "dwa", "famo", "geometric", "gradnorm", "imtl_l", "log_losses",
           "random_weighting", "static", "uncertainty"]
