"""One protocol for every balancing method, and ``chain`` to compose them.

Every loss weighting (static, UW, DWA, FAMO, GradNorm, ...) and every gradient aggregator
(MGDA, PCGrad, CAGrad, UPGrad, ...) is a :class:`Method`: an optax-like pair of pure functions

    init(num_tasks) -> state,          update(info, state, key) -> (weights, state)

where ``info`` is an :class:`Info`: this step's ``[T]`` losses (gradients stopped) and, when
the method declares it ``needs`` them, the ``T x T`` Gramian ``G_ij = <g_i, g_j>`` of the
tasks' gradients (``"feature_gramian"``: w.r.t. the shared representation ``z``, MGDA-UB's
level, about one EW step; ``"parameter_gramian"``: exact, w.r.t. all shared parameters,
about ``1 + T/3`` EW steps) or the per-task gradients at ``z`` themselves
(``"feature_jacobian"``, leaves ``[T, *z.shape]``), and which tasks are ``present`` in the step's
batch. ``weights`` is ``[T]``: the step follows
the gradient of ``sum_i weights_i L_i``, weights held constant. A per-coordinate method
(GradDrop) returns a :class:`Direction` instead: the weights for the task-owned parameters
and the cotangent to send through the trunk.

The state lives in the train state, so it is checkpointed and sharded with the rest.

**Absent tasks.** A task with no labelled element in a step's batch (a multi-input step that
sampled other tasks' data, or missing labels) has loss 0 and a zero gradient. Every method
treats it as absent: the weights of the present tasks are those the method gives on the
problem of the present tasks alone (a mean is over present tasks, MGDA's simplex and Nash's
bargaining are theirs), the absent task's weight is 0, and none of its state moves (UW's
log-variance, FAMO's logits and last loss, DWA's epoch means, GradNorm's initial loss,
GradVac's goals). ``tests/test_absent_tasks.py`` checks this for every registered method.

``chain(a, b, c)`` is itself a method: ``a`` weights the tasks, ``b`` sees the gradients ``a``
weighted (Gramian ``G * outer(w_a, w_a)``), ``c`` those ``a`` and ``b`` weighted, and the step's
weights are the product ``w_a * w_b * w_c``; every piece sees the raw losses (so DWA still
compares epoch losses, UW still learns their variances). ``chain(log_losses(), famo(),
upgrad())``: FAMO on log-losses, then UPGrad's projection of the weighted gradients. Its
``needs`` is the most any piece needs; :func:`at_level` moves it between the two levels.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

NEEDS = ("losses", "feature_gramian", "parameter_gramian", "feature_jacobian")
LEVELS = ("feature", "parameter")


class Info(NamedTuple):
    """What a method sees at one step (gradients stopped)."""
    losses: jax.Array          # [T] per-task mean losses
    gramian: Any = None        # [T, T] at the method's level, when it needs it
    jacobian: Any = None       # per-task gradients at z (leaves [T, *z.shape]), for "feature_jacobian"
    present: Any = None        # [T] bool: the task has a labelled element in the batch (None: every task)


def present_of(info: Info) -> jax.Array:
    """``info.present`` as a ``[T]`` bool array (every task when it is None)."""
    if info.present is None:
        return jnp.ones(info.losses.shape, bool)
    return jnp.asarray(info.present, bool)


def among_present(values: jax.Array, present: jax.Array) -> jax.Array:
    """``values`` on present tasks, 0 on absent ones."""
    return jnp.where(present, values, jnp.zeros_like(values))


def count_present(present: jax.Array) -> jax.Array:
    """The number of present tasks (at least 1, so that it can divide)."""
    return jnp.maximum(jnp.sum(present), 1).astype(jnp.float32)


def mean_among(values: jax.Array, present: jax.Array) -> jax.Array:
    """The mean of ``values`` over the present tasks."""
    return jnp.sum(among_present(values, present)) / count_present(present)


def softmax_among(logits: jax.Array, present: jax.Array) -> jax.Array:
    """``softmax`` over the present tasks, 0 on absent ones (all 0 when none is present)."""
    shifted = jnp.where(present, logits - jnp.max(jnp.where(present, logits, -jnp.inf)), -jnp.inf)
    exp = jnp.where(present, jnp.exp(shifted), 0.0)
    return exp / jnp.where(jnp.any(present), jnp.sum(exp), 1.0)


def keep_absent(new, old, present: jax.Array):
    """A per-task state updated for present tasks only: leaves ``[T, ...]`` keep their old entries
    for absent tasks; other leaves (scalars such as an optimizer's step count) take the new value."""
    num_tasks = present.shape[0]

    def pick(n, o):
        if jnp.ndim(n) == 0 or jnp.shape(n)[0] != num_tasks:
            return n
        return jnp.where(present.reshape((num_tasks,) + (1,) * (jnp.ndim(n) - 1)), n, o)
    return jax.tree.map(pick, new, old)


class Direction(NamedTuple):
    """A per-coordinate method's answer: task-owned parameters follow ``weights_i dL_i/dtheta_i``,
    the trunk back-propagates ``cotangent`` (a tree like ``z``)."""
    weights: jax.Array
    cotangent: Any


class Method(NamedTuple):
    init: Callable[[int], Any]
    update: Callable[[Info, Any, jax.Array], tuple[Any, Any]]
    needs: str = "losses"


def gramian_of(jacobian) -> jax.Array:
    """``J J^T`` of a pytree of per-task gradients (leaves ``[T, ...]``)."""
    return sum(f @ f.T for f in (leaf.reshape(leaf.shape[0], -1) for leaf in jax.tree.leaves(jacobian)))


def weighted_sum(weights: jax.Array, stacked):
    """``sum_i w_i x_i`` for a pytree of per-task values (leaves ``[T, ...]``), e.g. the balanced
    gradient ``J^T w`` from a Jacobian, or the cotangent ``sum_i w_i dL_i/dz``."""
    return jax.tree.map(lambda leaf: jnp.tensordot(weights.astype(leaf.dtype), leaf, axes=1), stacked)


def from_gramian(coefficients: Callable[[jax.Array, jax.Array, jax.Array], jax.Array]) -> Method:
    """A stateless aggregator from ``coefficients(gramian, key, present) -> [T]``."""
    return Method(lambda num_tasks: (),
                  lambda info, state, key: (coefficients(info.gramian, key, present_of(info)), state),
                  needs="feature_gramian")


def at_level(method: Method, level: str) -> Method:
    """The same method fed the Gramian at ``level`` (``"feature"`` or ``"parameter"``).

    Loss-only methods are returned unchanged; a Jacobian-level method only exists at the
    feature level and asking for the parameter level is an error.
    """
    if level not in LEVELS:
        raise ValueError(f"unknown gradient level {level!r}; expected one of {LEVELS}")
    if method.needs in ("feature_gramian", "parameter_gramian"):
        return method._replace(needs=f"{level}_gramian")
    if method.needs == "feature_jacobian" and level != "feature":
        raise ValueError("this method acts on each coordinate of the per-task gradients at the shared "
                         "representation and exists only at gradient_level='feature'")
    return method


def observed(method: Method, level: str) -> Method:
    """``method`` unchanged, but run by a step that forms the Gramian at ``level`` so that the
    task-gradient similarities can be logged (``gradient_diagnostics``)."""
    if method.needs != "losses":
        return method
    return at_level(method._replace(needs="feature_gramian"), level)


def _combined_needs(pieces) -> str:
    needs = [p.needs for p in pieces]
    if "feature_jacobian" in needs:
        return "feature_jacobian"
    levels = {n.split("_")[0] for n in needs if n.endswith("_gramian")}
    if len(levels) > 1:
        raise ValueError(f"chain: pieces need the Gramian at different levels ({sorted(levels)}); "
                         "use at_level on the chain instead")
    return f"{levels.pop()}_gramian" if levels else "losses"


def chain(*pieces: Method) -> Method:
    """Composes methods in order (see the module doc); a :class:`Direction` may only come last.

    Equal pieces give the same chain (compiled steps are reused)."""
    if not pieces:
        raise ValueError("chain needs at least one method")
    for index, piece in enumerate(pieces):
        if not isinstance(piece, Method):
            name = getattr(piece, "__name__", None)
            hint = f"the function {name!r}; call it: {name}()" if callable(piece) and name else type(piece).__name__
            raise TypeError(f"chain: piece {index} is {hint}, not a balancing Method")
        if piece.needs == "feature_jacobian" and index != len(pieces) - 1:
            raise ValueError("chain: a per-coordinate method (feature_jacobian) must come last")
    if len(pieces) == 1:
        return pieces[0]
    return _chain(pieces)


@functools.lru_cache(maxsize=256)
def _chain(pieces: tuple[Method, ...]) -> Method:
    needs = _combined_needs(pieces)

    def init(num_tasks: int):
        return tuple(piece.init(num_tasks) for piece in pieces)

    def update(info: Info, state, key):
        keys = jax.random.split(key, len(pieces))
        product = jnp.ones_like(info.losses)
        states = []
        for piece, piece_state, piece_key in zip(pieces, state, keys):
            gramian = None if info.gramian is None else info.gramian * jnp.outer(product, product)
            jacobian = None if info.jacobian is None else jax.tree.map(
                lambda leaf: leaf * product.astype(leaf.dtype).reshape((-1,) + (1,) * (leaf.ndim - 1)), info.jacobian)
            out, piece_state = piece.update(Info(info.losses, gramian, jacobian, info.present), piece_state,
                                            piece_key)
            states.append(piece_state)
            if isinstance(out, Direction):
                return Direction(product * out.weights, out.cotangent), tuple(states)
            product = product * out
        return product, tuple(states)

    return Method(init, update, needs)
