"""Mixed precision for any model: float32 parameters, reduced-precision compute, float32 out.

``mixed_precision(model, "bfloat16")`` wraps any architecture (every trunk, head, mixture of
experts, soft-sharing and attention model) so that each ``apply`` casts

* the floating-point variables it is given (``params``, and the parameter-Gramian engine's
  perturbations) and the floating-point inputs to the compute dtype, so every layer's matrix
  products, convolutions and activations run in it (Flax layers compute in the dtype of their
  inputs and parameters when no ``dtype`` is set);
* every floating-point output back to float32: predictions, the shared representation ``z`` and
  anything recorded.

The train state keeps float32 parameters, optimizer and balancing state (the master copy
of Micikevicius et al. 2018, "Mixed Precision Training"): gradients reach it through the casts in
float32, and losses, metrics, the per-task Gramians and every solver work on float32 values,
since they only see the model's outputs and gradients. Nothing else changes: the same step,
the same checkpoints (float32 parameters), the same methods at both gradient levels.

``bfloat16`` keeps float32's exponent range, so gradients do not underflow. ``float16`` does not:
``loss_scale=S`` multiplies every cotangent by ``S`` where it enters the reduced-precision
network (the outputs, in float32) and divides it by ``S`` where it leaves (the parameters and
perturbations, in float32): the backward pass inside runs on ``S`` times larger signals, so small
gradients survive float16, and every gradient outside the model is the unscaled one. Integer
inputs (token or field ids) are left as they are.

* A static scale (a number): a step whose scaled gradients overflow is non-finite and handled
  as any other (``nonfinite``: raise, or skip).
* ``loss_scale="dynamic"`` (Micikevicius et al. 2018, section 3.2; PyTorch's ``GradScaler``):
  the scale lives in the train state (``state.loss_scale``: ``scale``, ``good_steps``), starts at
  :data:`INITIAL_SCALE` and is found by the run itself (:func:`next_loss_scale`): a step whose
  losses are finite but whose gradient overflowed applies no update, halves the scale and
  counts as an ``overflow`` (logged; not a non-finite step); after :data:`GROWTH_INTERVAL`
  steps in a row without overflow the scale doubles. At scale 1 nothing is left to shrink, so
  a non-finite gradient there is a non-finite step as without scaling. The train step hands
  the scale to the model while it is traced (:func:`scaling_by`); anywhere else (evaluation,
  prediction) there are no cotangents to scale.
"""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp

PRECISIONS = ("float32", "bfloat16", "float16")
DYNAMIC = "dynamic"
INITIAL_SCALE = 2.0 ** 15  # a dynamic scale's start: halved at once where it overflows
GROWTH_INTERVAL = 2000  # steps in a row without overflow after which a dynamic scale doubles
_COMPUTE_DTYPE: contextvars.ContextVar[str] = contextvars.ContextVar("mtl_jax_compute_dtype", default="float32")
_STEP_SCALE: contextvars.ContextVar[Any] = contextvars.ContextVar("mtl_jax_loss_scale", default=None)


def compute_dtype():
    """The dtype the model being applied computes in: float32, or the precision of the
    :class:`MixedPrecision` wrapper applying it (read while the model is traced)."""
    return jnp.dtype(_COMPUTE_DTYPE.get())


def as_compute_floats(x, divisor: float | None = None):
    """Integer inputs (counts, or ``uint8`` images with ``divisor=255``) as floats of the compute
    dtype; floating inputs unchanged (the wrapper already cast them)."""
    if jnp.issubdtype(x.dtype, jnp.floating):
        return x
    x = x.astype(compute_dtype())
    return x / jnp.asarray(divisor, x.dtype) if divisor is not None else x


@contextlib.contextmanager
def _computing_in(dtype):
    token = _COMPUTE_DTYPE.set(jnp.dtype(dtype).name)
    try:
        yield
    finally:
        _COMPUTE_DTYPE.reset(token)


@contextlib.contextmanager
def scaling_by(scale):
    """The train step's dynamic loss scale (a traced float32 scalar, or None) for the
    ``loss_scale="dynamic"`` models applied while the step is traced."""
    token = _STEP_SCALE.set(scale)
    try:
        yield
    finally:
        _STEP_SCALE.reset(token)


def initial_loss_scale(model) -> dict | None:
    """A dynamic-scaling model's part of a new train state (None for every other model)."""
    if not (isinstance(model, MixedPrecision) and model.loss_scale == DYNAMIC):
        return None
    return {"scale": jnp.asarray(INITIAL_SCALE, jnp.float32), "good_steps": jnp.zeros((), jnp.int32)}


def next_loss_scale(loss_scale: dict, gradient_finite) -> tuple[dict, Any]:
    """``(next state, overflow)``: after an overflow (a non-finite gradient while the scale is
    above 1) the scale halves; after :data:`GROWTH_INTERVAL` finite steps in a row it doubles."""
    scale, good = loss_scale["scale"], loss_scale["good_steps"]
    overflow = ~gradient_finite & (scale > 1.0)
    grow = gradient_finite & (good + 1 >= GROWTH_INTERVAL)
    scale = jnp.where(overflow, jnp.maximum(scale / 2.0, 1.0), jnp.where(grow, scale * 2.0, scale))
    good = jnp.where(gradient_finite & ~grow, good + 1, 0).astype(jnp.int32)
    return {"scale": scale, "good_steps": good}, overflow


def check_precision(precision: str, loss_scale: float | str = 1.0) -> None:
    """A named error for an unknown precision or a loss scale that is neither a positive number
    nor ``"dynamic"``."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {PRECISIONS}")
    if loss_scale == DYNAMIC:
        if precision != "float16":
            raise ValueError(f"a dynamic loss_scale is for float16 compute; {precision} does not need it "
                             "(bfloat16 has float32's exponent range)")
        return
    if (not isinstance(loss_scale, (int, float)) or isinstance(loss_scale, bool)
            or not math.isfinite(loss_scale) or loss_scale <= 0):
        raise ValueError(f"loss_scale must be a finite number > 0 or 'dynamic', got {loss_scale!r}")
    if loss_scale != 1 and precision != "float16":
        raise ValueError(f"loss_scale {loss_scale} is for float16 compute; {precision} does not need it "
                         "(bfloat16 has float32's exponent range)")


def mixed_precision(model, precision: str = "float32", loss_scale: float | str = 1.0):
    """``model`` computing in ``precision`` (``float32``: the model itself); ``loss_scale``: a
    number, or ``"dynamic"`` (float16 only)."""
    check_precision(precision, loss_scale)
    if precision == "float32":
        return unwrap(model)
    return MixedPrecision(unwrap(model), precision, loss_scale if loss_scale == DYNAMIC else float(loss_scale))


def precision_of(model) -> str:
    """``"float32"``, ``"bfloat16"`` or ``"float16"`` (with its loss scale, e.g.
    ``"float16 (loss scale 1024)"``, ``"float16 (dynamic loss scale)"``): what a run records in
    its signature."""
    if not isinstance(model, MixedPrecision):
        return "float32"
    if model.loss_scale == DYNAMIC:
        return f"{model.precision} (dynamic loss scale)"
    return model.precision + (f" (loss scale {model.loss_scale:g})" if model.loss_scale != 1 else "")


def unwrap(model):
    """The Flax module inside a :class:`MixedPrecision` wrapper (any other model as it is)."""
    return model.model if isinstance(model, MixedPrecision) else model


def _cast(tree: Any, dtype) -> Any:
    """Floating-point leaves of ``tree`` as ``dtype``; every other leaf unchanged."""
    def cast(leaf):
        if (hasattr(leaf, "dtype") and jnp.issubdtype(jnp.result_type(leaf), jnp.floating)
                and jnp.result_type(leaf) != dtype):
            return jnp.asarray(leaf).astype(dtype)
        return leaf
    return jax.tree.map(cast, tree)


@jax.custom_vjp
def _scale_cotangent(x, scale):
    return x


def _scale_forward(x, scale):
    return x, scale


def _scale_backward(scale, cotangent):
    return jax.tree.map(lambda c: c * scale.astype(c.dtype), cotangent), None


_scale_cotangent.defvjp(_scale_forward, _scale_backward)


def _scaled_cotangents(tree: Any, scale) -> Any:
    """``tree`` itself; its cotangents multiplied by ``scale`` (a number or a traced scalar;
    floating leaves only)."""
    if isinstance(scale, (int, float)) and scale == 1.0:
        return tree
    factor = jnp.asarray(scale, jnp.float32)

    def one(leaf):
        if hasattr(leaf, "dtype") and jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
            return _scale_cotangent(leaf, factor)
        return leaf
    return jax.tree.map(one, tree)


@dataclasses.dataclass(frozen=True)
class MixedPrecision:
    """A model that computes in ``precision`` on float32 parameters (see the module's docstring).

    It has the wrapped module's interface: ``init`` (float32 parameters, as the model's own),
    ``apply`` (with ``method=``, ``mutable=``, ``rngs=``) and every attribute of the model
    (``represent``, ``predict_from``, ``param_owner``, ``task_names``...), so the train, eval and
    predict steps, both gradient levels and the diagnostics use it as they use the model.
    """
    model: Any
    precision: str
    loss_scale: float | str = 1.0  # a number, or "dynamic": the train step's (see the module doc)

    @property
    def compute_dtype(self):
        return jnp.dtype(self.precision)

    def init(self, rngs, *args, **kwargs):
        return self.model.init(rngs, *args, **kwargs)

    def apply(self, variables, *args, **kwargs):
        dtype, scale = self.compute_dtype, self.loss_scale
        if scale == DYNAMIC:  # the train step's scale while it is traced; elsewhere nothing to scale
            scale = _STEP_SCALE.get()
            scale = 1.0 if scale is None else scale
        variables = {name: _cast(_scaled_cotangents(tree, 1.0 / scale), dtype) for name, tree in variables.items()}
        args = _cast(_scaled_cotangents(args, 1.0 / scale), dtype)
        with _computing_in(dtype):
            outputs = self.model.apply(variables, *args, **kwargs)
        return _scaled_cotangents(_cast(outputs, jnp.float32), scale)

    def __getattr__(self, name):
        if name == "model":  # not set yet (copying, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.model, name)
