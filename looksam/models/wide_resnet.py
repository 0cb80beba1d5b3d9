"""Wide ResNet (Zagoruyko & Komodakis, 2016): pre-activation blocks, three stages of 16k, 32k, 64k."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from looksam.models.layers import batch_norm, conv


class WideBlock(nn.Module):
    """BN-ReLU-conv3x3, BN-ReLU-dropout-conv3x3, plus the shortcut."""

    features: int
    strides: int = 1
    dropout_rate: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        h = nn.relu(batch_norm(train, dtype=self.dtype)(x))
        y = conv(self.features, 3, self.strides, dtype=self.dtype)(h)
        y = nn.relu(batch_norm(train, dtype=self.dtype)(y))
        y = nn.Dropout(self.dropout_rate)(y, deterministic=not train)
        y = conv(self.features, 3, dtype=self.dtype)(y)
        if x.shape == y.shape:
            return x + y
        # As in the reference code, the 1x1 projection takes the pre-activated input.
        return conv(self.features, 1, self.strides, dtype=self.dtype)(h) + y


class WideResNet(nn.Module):
    depth: int = 28
    widen_factor: int = 10
    dropout_rate: float = 0.0
    num_classes: int = 10
    dtype: Any = jnp.float32  # compute dtype; parameters stay float32

    @nn.compact
    def __call__(self, x, train: bool = True):
        if self.depth < 10 or (self.depth - 4) % 6:
            raise ValueError(f"depth={self.depth}: a WRN has depth 6n + 4 with n >= 1")
        blocks = (self.depth - 4) // 6
        x = conv(16, 3, dtype=self.dtype)(x.astype(self.dtype))
        for i, features in enumerate((16, 32, 64)):
            for j in range(blocks):
                strides = 2 if i > 0 and j == 0 else 1
                x = WideBlock(features * self.widen_factor, strides, self.dropout_rate,
                              dtype=self.dtype)(x, train)
        # Pre-activation blocks end on a conv: the last BN-ReLU comes before the pool.
        x = nn.relu(batch_norm(train, dtype=self.dtype)(x))
        x = x.mean(axis=(1, 2))
        return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)
