"""PyramidNet (Han et al., CVPR 2017) with basic blocks and additive widening, for CIFAR.

Every block widens by alpha / (number of blocks) channels, so after 3n blocks the net is
16 + alpha wide. Shortcuts are parameter-free: avg-pool where the block downsamples, then zero
channels appended for the new width. Blocks follow the paper's BN-conv-BN-ReLU-conv-BN with
no ReLU after the addition.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from looksam.models.layers import batch_norm, conv


class PyramidBlock(nn.Module):
    features: int
    strides: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        y = batch_norm(train, dtype=self.dtype)(x)
        y = conv(self.features, 3, self.strides, dtype=self.dtype)(y)
        y = nn.relu(batch_norm(train, dtype=self.dtype)(y))
        y = conv(self.features, 3, dtype=self.dtype)(y)
        y = batch_norm(train, dtype=self.dtype)(y)
        if self.strides > 1:
            # "SAME" with count_include_pad=False is PyTorch's ceil_mode pool on odd sizes. It
            # divides by a float32 count: cast back so that bf16 stays bf16.
            pooled = nn.avg_pool(x, (2, 2), strides=(2, 2), padding="SAME", count_include_pad=False)
            x = pooled.astype(x.dtype)
        return y + jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, self.features - x.shape[-1])))


class PyramidNet(nn.Module):
    depth: int = 110
    alpha: float = 270
    num_classes: int = 10
    dtype: Any = jnp.float32  # compute dtype; parameters stay float32

    @nn.compact
    def __call__(self, x, train: bool = True):
        if self.depth < 8 or (self.depth - 2) % 6:
            raise ValueError(f"depth={self.depth}: a basic-block PyramidNet has depth 6n + 2 with n >= 1")
        blocks = (self.depth - 2) // 6
        x = conv(16, 3, dtype=self.dtype)(x.astype(self.dtype))
        x = batch_norm(train, dtype=self.dtype)(x)
        # Accumulate the float width and round per block, exactly as the reference code does, so
        # that non-integer steps give the same channel counts.
        width, step = 16.0, self.alpha / (3 * blocks)
        for i in range(3):
            for j in range(blocks):
                width += step
                strides = 2 if i > 0 and j == 0 else 1
                x = PyramidBlock(int(round(width)), strides, dtype=self.dtype)(x, train)
        x = nn.relu(batch_norm(train, dtype=self.dtype)(x))
        x = x.mean(axis=(1, 2))
        return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)
