"""Solvers that say how they ended: the certificate an aggregator keeps in its state.

An aggregator whose coefficients come from an iterative solve (UPGrad, DualProj, MGDA,
CAGrad, Nash-MTL) keeps a :class:`Certificate` in its state: the solve's residual at the last
step (relative, scale-free; its meaning is in each method's docstring) and the tolerance a
converged solve reaches in the dtype it ran in. The train step reads the worst one from the
weighting state (:func:`worst`) and returns it with the step's outputs; ``fit`` logs it as
``train/solver_residual`` and warns once when a residual exceeds its tolerance: a method that
silently returned an unconverged answer would be a wrong answer.
"""
from __future__ import annotations

from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp

from mtl_jax.balancing import Method, present_of


@flax.struct.dataclass
class Certificate:
    residual: jax.Array   # the solve's relative residual at the last step
    tolerance: jax.Array  # what a converged solve reaches in the dtype it ran in
    method: str = flax.struct.field(pytree_node=False, default="")


def blank(method: str) -> Certificate:
    return Certificate(jnp.zeros((), jnp.float32), jnp.ones((), jnp.float32), method)


def issue(method: str, residual, tolerance: float) -> Certificate:
    return Certificate(jnp.asarray(residual, jnp.float32), jnp.asarray(tolerance, jnp.float32), method)


def certified(method: str, solve: Callable[[jax.Array, jax.Array, jax.Array], tuple[jax.Array, Certificate]]
              ) -> Method:
    """An aggregator whose state is its last solve's certificate, from ``solve(gramian, key, present)
    -> (coefficients, certificate)`` (``present``: the tasks in the step's batch, see
    :mod:`mtl_jax.balancing`)."""
    return Method(lambda num_tasks: blank(method),
                  lambda info, state, key: solve(info.gramian, key, present_of(info)),
                  needs="feature_gramian")


def _certificates(tree: Any) -> list[Certificate]:
    return [leaf for leaf in jax.tree.leaves(tree, is_leaf=lambda x: isinstance(x, Certificate))
            if isinstance(leaf, Certificate)]


def worst(tree: Any) -> dict[str, jax.Array] | None:
    """``{"residual", "ratio"}``: the largest residual in ``tree``'s certificates and the largest
    residual / tolerance (above 1: not converged); None when ``tree`` holds none."""
    found = _certificates(tree)
    if not found:
        return None
    return {"residual": jnp.max(jnp.stack([c.residual for c in found])),
            "ratio": jnp.max(jnp.stack([c.residual / c.tolerance for c in found]))}


def methods(tree: Any) -> list[str]:
    """The names of the methods whose certificates ``tree`` holds."""
    return sorted({c.method for c in _certificates(tree)})
