"""Mixtures of experts for multi-task learning: MMoE and CGC / PLE.

**MMoE** (Ma et al. 2018, "Modeling Task Relationships in Multi-task Learning with
Multi-gate Mixture-of-Experts", KDD). ``E`` shared experts ``f_e``; each task ``k`` has its
own softmax gate over them and its own tower ``h_k``::

    y_k = h_k( sum_e g_k(x)_e f_e(x) ),     g_k(x) = softmax(W_k x)

Shared: the experts (and the optional input ``encoder``, e.g. shared user/item
embeddings). Task ``k`` owns ``gates_k`` and its tower ``heads_k``. The shared representation
is ``z = {"experts": [B, E, d], "gate_input": [B, D]}``; the gate input is part of ``z``
because the gates read the (shared) encoded features.

**CGC / PLE** (Tang et al. 2020, "Progressive Layered Extraction (PLE): A Novel Multi-Task
Learning (MTL) Model for Personalized Recommendations", RecSys). Each level has ``S`` shared
experts and ``K`` experts per task. At level ``l`` task ``t``'s stream mixes its own and the
shared experts with its gate, and (below the last level) a shared stream mixes *all*
experts with a shared gate::

    h_t^l = sum_{e in E_t^l u E_s^l} g_t^l(h_t^{l-1})_e f_e(h_{.}^{l-1})
    h_s^l = sum_{e in all experts of level l} g_s^l(h_s^{l-1})_e f_e(h_{.}^{l-1})
    y_t   = tower_t(h_t^L),    h^0 = x

(each expert reads the stream of its group: task ``t``'s experts ``h_t``, shared ones ``h_s``).
``levels=1`` is CGC (Customized Gate Control). Ownership follows the gradients: below the last
level every expert and gate influences every task through the shared gate, so they are all
shared; at the last level the shared experts are shared and task ``t`` owns its experts
``own_experts_t``, its gate ``gates_t`` and tower ``heads_t``. The shared representation is
``z = {"shared_experts": [B, S, d], "streams": [B, T, D]}`` (the last level's inputs).

Gate weights are sown into the ``"intermediates"`` collection (``gate_<task>``, and for PLE's
lower levels ``level<l>_gates``); :func:`gate_weights` returns them for logging.

Experts are evaluated together as batched GEMMs (:class:`Experts`: one ``[E, in, out]``
kernel per layer), never as a Python loop over experts.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.core import FrozenDict

from mtl_jax.models.mixed_precision import as_compute_floats
from mtl_jax.models.contract import Architecture, owner_by_prefix, task_copy
from mtl_jax.models.heads import Head
from mtl_jax.tasks import Task


class Experts(nn.Module):
    """``E`` independent MLPs (``Dense-ReLU`` per width) as batched GEMMs.

    ``x``: ``[B, in]`` (every expert reads it) or ``[B, E, in]`` (expert ``e`` reads ``x[:, e]``);
    returns ``[B, E, features[-1]]``.
    """

    num_experts: int
    features: Sequence[int] = (64,)
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x, train: bool = False):
        init = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal", batch_axis=(0,))
        for i, width in enumerate(self.features):
            kernel = self.param(f"kernel_{i}", init, (self.num_experts, x.shape[-1], width))
            bias = self.param(f"bias_{i}", nn.initializers.zeros, (self.num_experts, width))
            x = jnp.einsum("bi,eio->beo" if x.ndim == 2 else "bei,eio->beo", x, kernel) + bias
            x = nn.relu(x)
            if self.dropout:
                x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return x


class TaskGates(nn.Module):
    """One linear gate per task, batched: ``[B, T, D] -> [B, T, n]`` logits."""

    num_outputs: int

    @nn.compact
    def __call__(self, streams):
        num_tasks, width = streams.shape[1:]
        init = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal", batch_axis=(0,))
        kernel = self.param("kernel", init, (num_tasks, width, self.num_outputs))
        bias = self.param("bias", nn.initializers.zeros, (num_tasks, self.num_outputs))
        return jnp.einsum("btd,tdn->btn", streams, kernel) + bias


def _encode(encoder, x, train):
    """The encoder's features, or the raw inputs flattened to ``[B, D]`` floats."""
    features = encoder(x, train=train) if encoder is not None else as_compute_floats(x.reshape(x.shape[0], -1))
    return features.reshape(features.shape[0], -1)


def _mix(weights, experts):
    """``sum_e weights[..., e] experts[..., e, :]``."""
    return jnp.einsum("...e,...ed->...d", weights, experts)


class MMoE(Architecture):
    """Multi-gate mixture of experts (see the module docstring)."""

    heads: Mapping[str, nn.Module]
    num_experts: int = 4
    expert_features: Sequence[int] = (64,)
    encoder: nn.Module | None = None
    dropout: float = 0.0

    def setup(self):
        self.experts = Experts(self.num_experts, tuple(self.expert_features), self.dropout)
        self.gates = {name: nn.Dense(self.num_experts) for name in self.heads}

    def represent(self, x, train: bool = False):
        features = _encode(self.encoder, x, train)
        return {"experts": self.experts(features, train), "gate_input": features}

    def predict_from(self, z, train: bool = False):
        out = {}
        for name, head in self.heads.items():
            z_task = task_copy(z, name, self.heads)
            gate_input = z_task["gate_input"]
            if self.encoder is None:  # raw inputs: no parameter lies behind them
                gate_input = jax.lax.stop_gradient(gate_input)
            weights = nn.softmax(self.gates[name](gate_input))
            self.sow("intermediates", f"gate_{name}", weights)
            out[name] = head(_mix(weights, z_task["experts"]), train=train)
        return out

    def param_owner(self, name: str) -> str:
        return owner_by_prefix(name, self.heads, ("gates_", "heads_"), ("experts", "encoder"), "MMoE")


class PLE(Architecture):
    """Progressive layered extraction; ``levels=1`` is CGC (see the module docstring)."""

    heads: Mapping[str, nn.Module]
    levels: int = 2
    shared_experts: int = 2
    task_experts: int = 2
    expert_features: Sequence[int] = (64,)
    encoder: nn.Module | None = None
    dropout: float = 0.0

    def setup(self):
        if self.levels < 1 or self.shared_experts < 1 or self.task_experts < 1:
            raise ValueError(f"PLE needs levels, shared_experts and task_experts >= 1, got {self.levels}, "
                             f"{self.shared_experts}, {self.task_experts}")
        num_tasks, features = len(self.heads), tuple(self.expert_features)
        total = num_tasks * self.task_experts + self.shared_experts
        self.lower_experts = [Experts(total, features, self.dropout) for _ in range(self.levels - 1)]
        self.lower_task_gates = [TaskGates(self.task_experts + self.shared_experts) for _ in range(self.levels - 1)]
        self.lower_shared_gates = [nn.Dense(total) for _ in range(self.levels - 1)]
        self.last_shared_experts = Experts(self.shared_experts, features, self.dropout)
        self.own_experts = {name: Experts(self.task_experts, features, self.dropout) for name in self.heads}
        self.gates = {name: nn.Dense(self.task_experts + self.shared_experts) for name in self.heads}

    def _lower_level(self, level: int, task_streams, shared_stream, train):
        """One extraction level below the last: ``[B, T, D], [B, D] -> [B, T, d], [B, d]``."""
        num_tasks, k, s = len(self.heads), self.task_experts, self.shared_experts
        groups = np.concatenate([np.repeat(np.arange(num_tasks), k), np.full(s, num_tasks)])
        streams = jnp.concatenate([task_streams, shared_stream[:, None]], axis=1)  # [B, T+1, D]
        experts = self.lower_experts[level](streams[:, groups], train)  # [B, T*K+S, d]
        # task t's gate covers its own K experts and the S shared ones
        chosen = np.stack([np.concatenate([np.arange(t * k, (t + 1) * k), num_tasks * k + np.arange(s)])
                           for t in range(num_tasks)])  # [T, K+S]
        task_weights = nn.softmax(self.lower_task_gates[level](task_streams))
        shared_weights = nn.softmax(self.lower_shared_gates[level](shared_stream))
        self.sow("intermediates", f"level{level}_gates", {"tasks": task_weights, "shared": shared_weights})
        task_out = jnp.einsum("btn,btnd->btd", task_weights, experts[:, chosen])
        return task_out, _mix(shared_weights, experts)

    def represent(self, x, train: bool = False):
        features = _encode(self.encoder, x, train)
        num_tasks = len(self.heads)
        task_streams = jnp.broadcast_to(features[:, None], (features.shape[0], num_tasks, features.shape[-1]))
        shared_stream = features
        for level in range(self.levels - 1):
            task_streams, shared_stream = self._lower_level(level, task_streams, shared_stream, train)
        return {"shared_experts": self.last_shared_experts(shared_stream, train), "streams": task_streams}

    def predict_from(self, z, train: bool = False):
        out = {}
        for index, (name, head) in enumerate(self.heads.items()):
            z_task = task_copy(z, name, self.heads)
            stream = z_task["streams"][:, index]
            if self.encoder is None and self.levels == 1:  # raw inputs: no parameter lies behind them
                stream = jax.lax.stop_gradient(stream)
            experts = jnp.concatenate([self.own_experts[name](stream, train), z_task["shared_experts"]], axis=1)
            weights = nn.softmax(self.gates[name](stream))
            self.sow("intermediates", f"gate_{name}", weights)
            out[name] = head(_mix(weights, experts), train=train)
        return out

    def param_owner(self, name: str) -> str:
        return owner_by_prefix(name, self.heads, ("own_experts_", "gates_", "heads_"),
                               ("lower_", "last_shared_experts", "encoder"), "PLE")


def gate_weights(model: nn.Module, params, inputs) -> dict[str, Any]:
    """The gates' softmax weights for ``inputs``: ``{"gate_<task>": [B, n], ...}`` (and PLE's lower levels)."""
    _, state = model.apply({"params": params}, inputs, train=False, mutable=["intermediates"])
    return {name: value[0] for name, value in state.get("intermediates", {}).items()}


def _towers(tasks: Sequence[Task], hidden: Sequence[int]) -> FrozenDict:
    return FrozenDict({t.name: Head(t.output_dim, tuple(hidden)) for t in tasks})


def mmoe(tasks: Sequence[Task], *, num_experts: int = 4, expert_features: Sequence[int] = (64,),
         tower_hidden: Sequence[int] = (32,), encoder: nn.Module | None = None, dropout: float = 0.0) -> MMoE:
    """MMoE with a tower (``Dense-ReLU`` per ``tower_hidden`` width, then the output) per task."""
    _global_only(tasks, "MMoE")
    return MMoE(_towers(tasks, tower_hidden), num_experts, tuple(expert_features), encoder, dropout)


def ple(tasks: Sequence[Task], *, levels: int = 2, shared_experts: int = 2, task_experts: int = 2,
        expert_features: Sequence[int] = (64,), tower_hidden: Sequence[int] = (32,),
        encoder: nn.Module | None = None, dropout: float = 0.0) -> PLE:
    """PLE with ``levels`` extraction levels (``levels=1``: CGC) and a tower per task."""
    _global_only(tasks, "PLE")
    return PLE(_towers(tasks, tower_hidden), levels, shared_experts, task_experts, tuple(expert_features),
               encoder, dropout)


def _global_only(tasks: Sequence[Task], model: str) -> None:
    dense = [t.name for t in tasks if t.dense]
    if dense:
        raise ValueError(f"{model} mixes feature vectors; tasks {dense} predict per pixel (use mtan or hard sharing)")
