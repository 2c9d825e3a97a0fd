"""The exact ``T x T`` Gramian of the tasks' gradients w.r.t. *all* shared parameters, layer by layer.

``G_ij = <grad_theta L_i, grad_theta L_j>`` over the shared parameters ``theta`` is a sum of one
term per parameter tensor, so it never needs the ``T x P`` Jacobian at once. For a dense layer
``y = x W + b`` the per-task gradients are ``x^T delta_i`` and ``1^T delta_i``, where
``delta_i = dL_i/dy`` is the backpropagated signal at the layer's output, so

    G_ij += <x^T delta_i, x^T delta_j> + <1^T delta_i, 1^T delta_j>.

The engine gets every ``delta_i`` from *backward-data* passes only: each ``nn.Dense`` of the
trunk is intercepted (``flax.linen.intercept_methods``) to record its input ``x`` and add a
zero perturbation to its output, and the trunk's VJP w.r.t. those perturbations (the dense
weights held constant) is ``vmap``-ed over the T cotangents ``dL_i/dz``, ``TASK_CHUNK`` tasks
at a time: one GEMM with ``8 x N`` rows per layer. Per layer it then takes the cheaper of two
exact forms, by FLOP count:

* explicit: ``g_i = x^T delta_i`` for all tasks in one GEMM, then ``g g^T`` (memory ``T x`` the
  layer's parameters, freed before the next layer);
* kernel trick: ``K = x x^T`` (``N x N``, N rows of the layer's input) and
  ``G_ij += sum_nm K_nm (delta_i delta_j^T)_nm`` (memory ``N^2 + T N out``; wins when the batch
  is narrower than the layer, as in an MLP with batch 256 and width 1024).

Every other shared parameter — convolution kernels, normalisation scales, embeddings — is a
*general* parameter: its per-task gradients come from the same ``vmap``-ed VJP (XLA computes
them as batched filter gradients) and enter ``G`` as ``g g^T``. For convolutions this measured
faster on CPU than the patches-and-GEMM form of ``x^T delta`` (building 288-wide patches costs
more than the batched filter gradient) but it does hold ``T x`` their size; dense layers never
do. Once the method has chosen weights ``w``, the update of a dense layer is
``x^T (sum_i w_i delta_i)`` (one GEMM, as in an EW step) and of a general parameter
``sum_i w_i g_i``: no further backward pass. The cost is about ``T/3`` extra EW steps of
backward-data GEMMs (the unavoidable part) plus the Gramian contractions: see
``benchmarks/README.md``. A dense layer called twice in one forward pass (weight tying) is
refused with a clear error; use the feature level there.

The idea of forming the Gramian without the Jacobian is torchjd's (Quinton & Rey 2024,
"Jacobian Descent for Multi-Objective Optimization"); the per-layer ``x^T delta`` factorisation
is the one of per-example gradient methods (Goodfellow 2015, "Efficient per-example gradient
computations").
"""
from __future__ import annotations

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.traverse_util import flatten_dict, unflatten_dict

INPUTS = "gramian_inputs"
PERTURBATIONS = "perturbations"
GRAM_MAX_ROWS = 4096  # the kernel trick's N x N matrix stays below 64 MiB
TASK_CHUNK = 8  # tasks per backward-data pass: GEMMs of 8 x batch rows stay in cache (~25% faster on CPU at T=32)


class LayerSpec(NamedTuple):
    """What the Gramian needs to know about one intercepted dense layer."""
    bias: bool


def _spec(module, x) -> LayerSpec | None:
    """The layer's spec, or None when the engine treats its parameters as general ones."""
    if type(module) is nn.Dense:
        return LayerSpec(bool(module.use_bias))
    return None


class Taps(NamedTuple):
    """The handled layers of a trunk (found by tracing it abstractly once)."""
    record: dict  # module path -> LayerSpec
    perturbations: Any  # zeros shaped like the handled layers' outputs

    def split(self, shared: dict) -> tuple[dict, dict]:
        """``shared`` parameters as (in handled layers, general) flat dicts keyed by path."""
        flat = flatten_dict(shared)
        tapped = {path: leaf for path, leaf in flat.items() if path[:-1] in self.record}
        return tapped, {path: leaf for path, leaf in flat.items() if path not in tapped}


def _intercepted(record: dict):
    def tap(next_fun, args, kwargs, context):
        module = context.module
        spec = _spec(module, args[0]) if context.method_name == "__call__" and args else None
        if spec is None:
            return next_fun(*args, **kwargs)
        record[module.scope.path] = spec
        module.sow(INPUTS, "x", args[0])
        return module.perturb("y", next_fun(*args, **kwargs), collection=PERTURBATIONS)

    return nn.intercept_methods(tap)


def find_taps(model, params, inputs, **apply_kwargs) -> Taps:
    """Traces ``model``'s ``represent`` abstractly to find its handled layers."""
    record: dict = {}

    def trace():
        with _intercepted(record):
            return model.apply({"params": params}, inputs, method="represent", mutable=[INPUTS, PERTURBATIONS],
                               **apply_kwargs)[1]

    abstract = jax.eval_shape(trace)
    for path, xs in flatten_dict(abstract.get(INPUTS, {})).items():
        if len(xs) != 1:
            raise ValueError(f"layer {'/'.join(path[:-1])} is called {len(xs)} times in one forward pass; the "
                             "parameter-level Gramian needs each Dense called once (use gradient_level="
                             "'feature', or give each call its own layer)")
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), abstract.get(PERTURBATIONS, {}))
    return Taps(record, zeros)


def tapped_forward(model, taps: Taps, params, shared_keys, inputs, **apply_kwargs):
    """``z`` and ``pullback(per_task_cotangents) -> (signals, general_grads)``, plus the
    recorded layer inputs. ``signals`` are the ``[*y.shape[:-1], T, out]`` output gradients of the
    handled layers; ``general_grads`` the ``[T, ...]`` per-task gradients of the other shared
    parameters (flat dict by path)."""
    shared = {k: params[k] for k in shared_keys}
    tapped, general = taps.split(shared)

    def trunk(general_params, perturbations):
        merged = {**params, **unflatten_dict({**tapped, **general_params})}
        with _intercepted({}):
            z, state = model.apply({"params": merged, PERTURBATIONS: perturbations}, inputs, method="represent",
                                   mutable=[INPUTS], **apply_kwargs)
        return z, state.get(INPUTS, {})

    z, vjp, recorded = jax.vjp(trunk, general, taps.perturbations, has_aux=True)

    def pullback(per_task):
        num_tasks = jax.tree.leaves(per_task)[0].shape[0]
        parts = [jax.vmap(vjp, out_axes=(0, -2))(jax.tree.map(lambda leaf: leaf[start:start + TASK_CHUNK], per_task))
                 for start in range(0, num_tasks, TASK_CHUNK)]
        if len(parts) == 1:
            general_grads, signals = parts[0]
        else:
            general_grads = jax.tree.map(lambda *g: jnp.concatenate(g, axis=0), *[g for g, _ in parts])
            signals = jax.tree.map(lambda *d: jnp.concatenate(d, axis=-2), *[d for _, d in parts])
        return signals, general_grads  # signals [..., T, out]

    return z, pullback, recorded


def _pair_sums(a, b):
    """``sum_n a[n] b[n]^T`` for ``a, b`` of shape ``[N, T, M]``: the ``T x T`` matrix of
    inner products over ``(n, m)`` (a batched product over ``n``, no transposes)."""
    return jnp.sum(jax.lax.dot_general(a, b, (((2,), (2,)), ((0,), (0,)))), axis=0)


def layer_gramian(x, delta, spec: LayerSpec):
    """``sum`` over the layer's parameters of ``<g_i, g_j>``, from its input ``x`` and the
    per-task output signals ``delta`` (``[*y.shape[:-1], T, out]``, tasks next to last)."""
    num_tasks, out = delta.shape[-2:]
    rows = x.reshape(-1, x.shape[-1])
    signals = delta.reshape(-1, num_tasks, out)
    n, k = rows.shape
    explicit_cost = num_tasks * n * k * out + num_tasks ** 2 * k * out
    kernel_cost = n * n * k + num_tasks * n * n * out + num_tasks ** 2 * n * out
    if n <= GRAM_MAX_ROWS and kernel_cost < explicit_cost:
        mixed = ((rows @ rows.T) @ signals.reshape(n, -1)).reshape(signals.shape)  # K delta_i, K = x x^T
        gramian = _pair_sums(mixed, signals)
    else:
        per_task = (rows.T @ signals.reshape(n, -1)).reshape(k, num_tasks, out)  # g_i = x^T delta_i
        gramian = _pair_sums(per_task, per_task)
    if spec.bias:
        sums = (jnp.ones((1, n), signals.dtype) @ signals.reshape(n, -1)).reshape(num_tasks, out)  # a GEMV:
        gramian = gramian + sums @ sums.T  # XLA's CPU reduction over the leading axis is ~10x slower
    return gramian


def parameter_gramian(taps: Taps, recorded_inputs, signals, general_grads) -> jax.Array:
    """``G`` summed over the handled layers and the general shared parameters."""
    inputs, outputs = flatten_dict(recorded_inputs), flatten_dict(signals)
    total = 0.0
    for path, spec in taps.record.items():
        total = total + layer_gramian(inputs[path + ("x",)][0], outputs[path + ("y",)], spec)
    for leaf in general_grads.values():
        flat = leaf.reshape(leaf.shape[0], -1)
        total = total + flat @ flat.T
    return total


def weighted_shared_grads(taps: Taps, params, shared_keys, recorded_inputs, signals, general_grads, weights) -> dict:
    """``grad sum_i w_i L_i`` w.r.t. the shared parameters, from what the Gramian used:
    ``x^T (sum_i w_i delta_i)`` for handled layers (one GEMM each, as in an EW step) and
    ``sum_i w_i g_i`` for the general parameters."""
    shared = {k: params[k] for k in shared_keys}
    inputs, outputs = flatten_dict(recorded_inputs), flatten_dict(signals)
    grads = {path: jnp.tensordot(weights, leaf, axes=1) for path, leaf in general_grads.items()}
    for path, spec in taps.record.items():
        delta = jnp.einsum("...to,t->...o", outputs[path + ("y",)], weights)
        delta = delta.reshape(-1, delta.shape[-1])
        kernel_shape = flatten_dict(shared)[path + ("kernel",)].shape
        x = inputs[path + ("x",)][0]
        grads[path + ("kernel",)] = (x.reshape(-1, x.shape[-1]).T @ delta).reshape(kernel_shape)
        if spec.bias:
            grads[path + ("bias",)] = jnp.ones((delta.shape[0],), delta.dtype) @ delta
    return unflatten_dict(grads)


def describe(taps: Taps, shared_params: Any) -> dict[str, str]:
    """``{parameter path: "dense" | "general"}``: how each shared tensor enters the Gramian."""
    out = {}
    for path in flatten_dict(shared_params):
        spec = taps.record.get(path[:-1])
        out["/".join(path)] = "general" if spec is None else "dense"
    return out
