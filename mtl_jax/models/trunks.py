"""Shared trunks: the representation every task head reads.

Image trunks return a feature map ``[B, h, w, C]`` (global heads flatten or pool it,
dense heads decode it); the MLP and text trunks return ``[B, D]``. Integer images
(``uint8``) are scaled to ``[0, 1]`` on entry, by the MLP too.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from mtl_jax.models.mixed_precision import as_compute_floats
from mtl_jax.models.conv import conv_for_platform
from mtl_jax.models.conv_block import ConvReLUPool


def as_float_image(x):
    """Integer (``uint8``) images to floats in [0, 1]; float inputs pass unchanged. Floats of the
    compute dtype (:mod:`mtl_jax.models.mixed_precision`: float32 unless the model is wrapped)."""
    return as_compute_floats(x, 255)


class MLP(nn.Module):
    """Fully connected trunk: flatten, then ``Dense(f) -> ReLU [-> Dropout]`` per width."""

    features: Sequence[int] = (256, 256)
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x, train: bool = False):
        # uint8 inputs are images: scaled to [0, 1] as the conv trunks scale them (other integer
        # inputs, such as counts, keep their values)
        x = as_float_image(x) if x.dtype == jnp.uint8 else as_compute_floats(x)
        x = x.reshape(x.shape[0], -1)
        for width in self.features:
            x = nn.relu(nn.Dense(width)(x))
            if self.dropout:
                x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return x


class SeedCNN(nn.Module):
    """The seed's CNN: ``conv3x3(32)-ReLU-maxpool2, conv3x3(64)-ReLU-maxpool2``.

    Returns the ``[B, H/4, W/4, 64]`` map; the seed's flatten happens in the heads
    (``Head(pool="flatten")``), so dense heads can read the same map.
    """

    expects = "(N, H, W, C) images"  # named in input-shape errors

    features: Sequence[int] = (32, 64)
    conv: str = "auto"  # "auto": the fast CPU convolution on CPU, XLA's elsewhere (mtl_jax.models.conv)

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = as_float_image(x)
        for i, width in enumerate(self.features):  # named as nn.Conv layers are: same parameter tree
            x = ConvReLUPool(width, (3, 3), (2, 2), conv=self.conv, name=f"Conv_{i}")(x)
        return x


class ResidualBlock(nn.Module):
    """Pre-activation residual block with GroupNorm (no batch statistics to carry)."""

    features: int
    strides: int = 1
    conv: str = "auto"

    @nn.compact
    def __call__(self, x):
        conv_fn = conv_for_platform(self.conv)
        groups = min(8, self.features)
        y = nn.relu(nn.GroupNorm(num_groups=min(8, x.shape[-1]))(x))
        shortcut = x
        if self.strides != 1 or x.shape[-1] != self.features:
            shortcut = nn.Conv(self.features, (1, 1), strides=self.strides, use_bias=False,
                               conv_general_dilated=conv_fn)(y)
        y = nn.Conv(self.features, (3, 3), strides=self.strides, padding="SAME", use_bias=False,
                    conv_general_dilated=conv_fn)(y)
        y = nn.relu(nn.GroupNorm(num_groups=groups)(y))
        y = nn.Conv(self.features, (3, 3), padding="SAME", use_bias=False, conv_general_dilated=conv_fn)(y)
        return shortcut + y


class ResNet(nn.Module):
    """A small ResNet: a 3x3 stem, then stages of residual blocks (stride 2 between stages)."""

    expects = "(N, H, W, C) images"  # named in input-shape errors

    stage_sizes: Sequence[int] = (1, 1, 1)
    widths: Sequence[int] = (32, 64, 128)
    conv: str = "auto"  # see SeedCNN

    @nn.compact
    def __call__(self, x, train: bool = False):
        if len(self.stage_sizes) != len(self.widths):
            raise ValueError(f"ResNet: stage_sizes {self.stage_sizes} and widths {self.widths} differ in length")
        x = nn.Conv(self.widths[0], (3, 3), padding="SAME",
                    conv_general_dilated=conv_for_platform(self.conv))(as_float_image(x))
        for stage, (blocks, width) in enumerate(zip(self.stage_sizes, self.widths)):
            for block in range(blocks):
                x = ResidualBlock(width, strides=2 if stage > 0 and block == 0 else 1, conv=self.conv)(x)
        return nn.relu(nn.GroupNorm(num_groups=min(8, x.shape[-1]))(x))


class EncoderLayer(nn.Module):
    """Pre-norm transformer encoder layer: self-attention then an MLP, both residual."""

    num_heads: int
    mlp_dim: int
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x, mask, train: bool = False):
        y = nn.LayerNorm()(x)
        y = nn.MultiHeadDotProductAttention(num_heads=self.num_heads, dropout_rate=self.dropout,
                                            deterministic=not train)(y, y, mask=mask)
        x = x + y
        y = nn.Dense(self.mlp_dim)(nn.LayerNorm()(x))
        y = nn.Dense(x.shape[-1])(nn.gelu(y))
        y = nn.Dropout(self.dropout, deterministic=not train)(y)
        return x + y


class TextEncoder(nn.Module):
    """Token ids ``[B, L]`` (0 = padding) to a ``[B, D]`` text representation.

    ``layers=0`` is a bag of embeddings (mean over non-padding tokens); ``layers>0`` adds a
    small transformer encoder with learned positions before the masked mean pool.
    """

    expects = "(N, L) token ids"  # named in input-shape errors

    vocab_size: int
    embed_dim: int = 64
    layers: int = 0
    num_heads: int = 4
    mlp_dim: int = 128
    max_length: int = 512
    dropout: float = 0.0

    @nn.compact
    def __call__(self, tokens, train: bool = False):
        if tokens.ndim != 2:
            raise ValueError(f"TextEncoder expects token ids [B, L], got shape {tokens.shape}")
        tokens = tokens.astype(jnp.int32)
        present = tokens > 0
        x = nn.Embed(self.vocab_size, self.embed_dim)(tokens)
        if self.layers:
            positions = self.param("positions", nn.initializers.normal(0.02), (self.max_length, self.embed_dim))
            x = x + positions[: tokens.shape[1]]
            attention_mask = nn.make_attention_mask(present, present)
            for _ in range(self.layers):
                x = EncoderLayer(self.num_heads, self.mlp_dim, self.dropout)(x, attention_mask, train)
            x = nn.LayerNorm()(x)
        weights = present[..., None].astype(x.dtype)
        return (x * weights).sum(1) / jnp.maximum(weights.sum(1), 1.0)


class FieldEmbedding(nn.Module):
    """Categorical fields ``[B, F]`` (integer ids) to concatenated embeddings ``[B, F * embed_dim]``.

    Field ``f`` has its own table of ``vocab_sizes[f]`` rows; all tables live in one matrix with
    per-field offsets, so the lookup is a single gather (the shared user/item features of a
    recommendation model). ``features`` adds ``Dense-ReLU`` layers on top.
    """

    expects = "(N, F) integer ids, one per field"  # named in input-shape errors

    vocab_sizes: Sequence[int]
    embed_dim: int = 16
    features: Sequence[int] = ()

    @nn.compact
    def __call__(self, ids, train: bool = False):
        if ids.ndim != 2 or ids.shape[1] != len(self.vocab_sizes):
            raise ValueError(f"FieldEmbedding expects ids [B, {len(self.vocab_sizes)}] (one column per field), "
                             f"got shape {ids.shape}")
        offsets = jnp.cumsum(jnp.asarray((0, *self.vocab_sizes[:-1]), jnp.int32))
        table = nn.Embed(int(sum(self.vocab_sizes)), self.embed_dim)
        x = table(ids.astype(jnp.int32) + offsets).reshape(ids.shape[0], -1)
        for width in self.features:
            x = nn.relu(nn.Dense(width)(x))
        return x
