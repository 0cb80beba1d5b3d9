"""Vision Transformer (Dosovitskiy et al., ICLR 2021), after google-research/vision_transformer.

Patch embedding conv, class token, learned position embedding, pre-LayerNorm encoder blocks and a
linear head on the class token (no pre-logits layer, as in the parameter counts papers quote).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

_dense_init = {"kernel_init": nn.initializers.xavier_uniform(), "bias_init": nn.initializers.normal(1e-6)}


class MlpBlock(nn.Module):
    mlp_dim: int
    dropout_rate: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, deterministic: bool):
        y = nn.gelu(nn.Dense(self.mlp_dim, dtype=self.dtype, **_dense_init)(x))
        y = nn.Dropout(self.dropout_rate)(y, deterministic=deterministic)
        y = nn.Dense(x.shape[-1], dtype=self.dtype, **_dense_init)(y)
        return nn.Dropout(self.dropout_rate)(y, deterministic=deterministic)


class EncoderBlock(nn.Module):
    num_heads: int
    mlp_dim: int
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, deterministic: bool):
        y = nn.LayerNorm(dtype=self.dtype)(x)
        y = nn.MultiHeadDotProductAttention(
            num_heads=self.num_heads, dtype=self.dtype, kernel_init=nn.initializers.xavier_uniform(),
            broadcast_dropout=False, dropout_rate=self.attention_dropout_rate,
        )(y, deterministic=deterministic)
        x = x + nn.Dropout(self.dropout_rate)(y, deterministic=deterministic)
        y = nn.LayerNorm(dtype=self.dtype)(x)
        return x + MlpBlock(self.mlp_dim, self.dropout_rate, dtype=self.dtype)(y, deterministic)


class ViT(nn.Module):
    """Defaults are ViT-B/16 at 224; `mlp_dim=None` means 4 x hidden_size."""

    patch_size: int = 16
    image_size: int = 224
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    mlp_dim: int | None = None
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    num_classes: int = 1000
    dtype: Any = jnp.float32  # compute dtype; parameters stay float32

    @nn.compact
    def __call__(self, x, train: bool = True):
        # The position embedding's shape fixes the resolution: say so rather than fail on a broadcast.
        size, patch = self.image_size, self.patch_size
        if size % patch:
            raise ValueError(f"image_size={size} is not a multiple of patch_size={patch}")
        if x.shape[1:3] != (size, size):
            raise ValueError(f"input of {x.shape[1]}x{x.shape[2]} for a ViT built for image_size={size}")
        deterministic = not train
        x = nn.Conv(self.hidden_size, (patch, patch), strides=(patch, patch),
                    padding="VALID", dtype=self.dtype, name="embedding")(x.astype(self.dtype))
        b, h, w, c = x.shape
        cls = self.param("cls", nn.initializers.zeros, (1, 1, c)).astype(self.dtype)
        x = jnp.concatenate([jnp.broadcast_to(cls, (b, 1, c)), x.reshape(b, h * w, c)], axis=1)
        posemb = self.param("pos_embedding", nn.initializers.normal(0.02), (1, h * w + 1, c))
        x = x + posemb.astype(self.dtype)
        x = nn.Dropout(self.dropout_rate)(x, deterministic=deterministic)
        for i in range(self.num_layers):
            x = EncoderBlock(self.num_heads, self.mlp_dim or 4 * self.hidden_size, self.dropout_rate,
                             self.attention_dropout_rate, dtype=self.dtype,
                             name=f"encoderblock_{i}")(x, deterministic)
        x = nn.LayerNorm(dtype=self.dtype, name="encoder_norm")(x)
        # Zero head, as in the reference: the initial logits are 0, the loss log(num_classes).
        head = nn.Dense(self.num_classes, dtype=self.dtype, kernel_init=nn.initializers.zeros, name="head")
        return head(x[:, 0]).astype(jnp.float32)
