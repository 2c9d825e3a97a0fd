"""Loss-weighting methods as ``(init, update)`` pairs (see :mod:`mtl_jax.weighting.base`)."""
from mtl_jax.weighting.base import Weighting
from mtl_jax.weighting.static import static

__all__ = ["Weighting", "static"]
