"""MTAN: per-task soft attention over a shared convolutional trunk.

Liu, Johns & Davison 2019, "End-to-End Multi-Task Learning with Attention" (CVPR). The shared
trunk has stages ``j = 1..J``; stage ``j`` computes ``u^j = relu(conv(x^j))`` and
``p^j = relu(conv(u^j))``, then ``x^{j+1} = maxpool(p^j)``. Task ``t`` has an attention module
per stage that learns a soft mask over the shared features::

    a_t^j  = sigmoid(conv1x1(relu(conv1x1([u^j ; f_t^{j-1}]))))        (no f for j = 1)
    h_t^j  = a_t^j * p^j                                               (elementwise)
    f_t^j  = maxpool(relu(conv3x3(h_t^j)))   -> channels of stage j+1, its resolution

and task ``t``'s head reads ``maxpool(h_t^J)`` (the trunk output's resolution): a global head
(flatten or mean pool) or a dense per-pixel decoder (:class:`mtl_jax.models.heads.PixelDecoder`)
alike. This is the encoder half of the paper's SegNet-MTAN, with the per-stage conv ``f``
owned by each task (the paper shares it across tasks) so that every task-owned parameter
receives its own task's gradient only.

Shared: the trunk's convolutions (``first_*``, ``second_*``). Task ``t`` owns
``attention_t`` and ``heads_t``. The shared representation is every stage's
``(u^j, p^j)``: ``z = {"intermediate": (u^1..u^J), "output": (p^1..p^J)}``.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import flax.linen as nn
import jax.numpy as jnp
from flax.core import FrozenDict

from mtl_jax.models.contract import Architecture, owner_by_prefix, task_copy
from mtl_jax.models.conv import conv_for_platform, fast_pooling, max_pool
from mtl_jax.models.heads import head_for
from mtl_jax.models.trunks import as_float_image
from mtl_jax.tasks import Task


class TaskAttention(nn.Module):
    """One task's attention modules over the shared stages (see the module docstring)."""

    features: Sequence[int]
    conv: str = "auto"

    @nn.compact
    def __call__(self, intermediate, output):
        conv_fn = conv_for_platform(self.conv)
        previous = None
        for stage, width in enumerate(self.features):
            inputs = intermediate[stage] if previous is None else jnp.concatenate([intermediate[stage], previous], -1)
            hidden = nn.relu(nn.Conv(width, (1, 1))(inputs))
            attended = nn.sigmoid(nn.Conv(width, (1, 1))(hidden)) * output[stage]
            if stage + 1 < len(self.features):
                projected = nn.Conv(self.features[stage + 1], (3, 3), padding="SAME", conv_general_dilated=conv_fn)
                previous = max_pool(nn.relu(projected(attended)), (2, 2), fast=fast_pooling(self.conv))
        return max_pool(attended, (2, 2), fast=fast_pooling(self.conv))


class MTAN(Architecture):
    """Shared conv stages with per-task attention (see the module docstring)."""

    heads: Mapping[str, nn.Module]
    features: Sequence[int] = (32, 64)
    conv: str = "auto"

    def setup(self):
        conv_fn = conv_for_platform(self.conv)
        self.first = [nn.Conv(w, (3, 3), padding="SAME", conv_general_dilated=conv_fn) for w in self.features]
        self.second = [nn.Conv(w, (3, 3), padding="SAME", conv_general_dilated=conv_fn) for w in self.features]
        self.attention = {name: TaskAttention(tuple(self.features), self.conv) for name in self.heads}

    def represent(self, x, train: bool = False):
        x = as_float_image(x)
        fast = fast_pooling(self.conv)
        intermediate, output = [], []
        for first, second in zip(self.first, self.second):
            u = nn.relu(first(x))
            p = nn.relu(second(u))
            intermediate.append(u)
            output.append(p)
            x = max_pool(p, (2, 2), fast=fast)
        return {"intermediate": tuple(intermediate), "output": tuple(output)}

    def predict_from(self, z, train: bool = False):
        out = {}
        for name, head in self.heads.items():
            z_task = task_copy(z, name, self.heads)
            out[name] = head(self.attention[name](z_task["intermediate"], z_task["output"]), train=train)
        return out

    def param_owner(self, name: str) -> str:
        return owner_by_prefix(name, self.heads, ("attention_", "heads_"), ("first_", "second_"), "MTAN")


def mtan(tasks: Sequence[Task], *, features: Sequence[int] = (32, 64), conv: str = "auto",
         head_hidden: Sequence[int] = (), pool: str = "flatten", output_size: tuple[int, int] | None = None) -> MTAN:
    """MTAN over ``features`` conv stages with a head per task (pixel decoders for dense tasks)."""
    heads = FrozenDict({t.name: head_for(t, hidden=tuple(head_hidden), pool=pool, output_size=output_size)
                        for t in tasks})
    return MTAN(heads, tuple(features), conv)
