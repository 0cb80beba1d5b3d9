"""ResNets for CIFAR and ImageNet: one block and stage implementation, two stems.

CIFAR (kuangliu/pytorch-cifar): 3x3 stride-1 stem, no max-pool, so the stages see 32, 16, 8, 4.
ImageNet (torchvision): 7x7 stride-2 stem and a 3x3 stride-2 max-pool (224 -> 56). Both use
projection shortcuts (1x1 conv + BN) where a block changes the shape, and put the bottleneck's
stride on the 3x3 conv ("ResNet v1.5").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from looksam.models.layers import batch_norm, conv


def _shortcut(x, y, strides: int, train: bool, dtype: Any):
    if x.shape == y.shape:
        return x
    return batch_norm(train, dtype=dtype)(conv(y.shape[-1], 1, strides, dtype=dtype)(x))


class BasicBlock(nn.Module):
    features: int
    strides: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        y = conv(self.features, 3, self.strides, dtype=self.dtype)(x)
        y = nn.relu(batch_norm(train, dtype=self.dtype)(y))
        y = conv(self.features, 3, dtype=self.dtype)(y)
        y = batch_norm(train, dtype=self.dtype)(y)
        return nn.relu(y + _shortcut(x, y, self.strides, train, self.dtype))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand to 4x `features`."""

    features: int
    strides: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        y = conv(self.features, 1, dtype=self.dtype)(x)
        y = nn.relu(batch_norm(train, dtype=self.dtype)(y))
        y = conv(self.features, 3, self.strides, dtype=self.dtype)(y)
        y = nn.relu(batch_norm(train, dtype=self.dtype)(y))
        y = conv(4 * self.features, 1, dtype=self.dtype)(y)
        y = batch_norm(train, dtype=self.dtype)(y)
        return nn.relu(y + _shortcut(x, y, self.strides, train, self.dtype))


BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}
STEMS = ("cifar", "imagenet")


class ResNet(nn.Module):
    """Stage i has `stage_sizes[i]` blocks of `width * 2**i` channels (4x that out of a bottleneck);
    stages after the first halve the resolution in their first block."""

    stage_sizes: Sequence[int] = (2, 2, 2, 2)
    block: str = "basic"  # "basic" or "bottleneck"
    stem: str = "cifar"  # "cifar" or "imagenet"
    width: int = 64
    num_classes: int = 10
    dtype: Any = jnp.float32  # compute dtype; parameters stay float32

    @nn.compact
    def __call__(self, x, train: bool = True):
        if self.block not in BLOCKS:
            raise ValueError(f"block={self.block!r}: choose one of {sorted(BLOCKS)}")
        if self.stem not in STEMS:
            raise ValueError(f"stem={self.stem!r}: choose one of {list(STEMS)}")
        x = x.astype(self.dtype)
        if self.stem == "cifar":
            x = conv(self.width, 3, dtype=self.dtype)(x)
        else:
            x = conv(self.width, 7, 2, dtype=self.dtype)(x)
        x = nn.relu(batch_norm(train, dtype=self.dtype)(x))
        if self.stem == "imagenet":
            x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        for i, size in enumerate(self.stage_sizes):
            for j in range(size):
                strides = 2 if i > 0 and j == 0 else 1
                x = BLOCKS[self.block](self.width * 2**i, strides, dtype=self.dtype)(x, train)
        x = x.mean(axis=(1, 2))
        return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)
