"""A small VGG-style CNN with BatchNorm: fast tests, smoke runs and method benchmarks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from looksam.models.layers import BATCHNORM_MOMENTUM


class CNN(nn.Module):
    """Per stage: two 3x3 conv-BN-ReLU blocks, then 2x2 max-pool; global average pool, dense head."""

    widths: Sequence[int] = (32, 64, 128)
    num_classes: int = 10
    dtype: Any = jnp.float32  # compute dtype; parameters stay float32

    @nn.compact
    def __call__(self, x, train: bool = True):
        x = x.astype(self.dtype)
        for width in self.widths:
            for _ in range(2):
                x = nn.Conv(width, (3, 3), use_bias=False, dtype=self.dtype)(x)
                x = nn.BatchNorm(use_running_average=not train, momentum=BATCHNORM_MOMENTUM,
                                 dtype=self.dtype)(x)
                x = nn.relu(x)
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = x.mean(axis=(1, 2))
        return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)
