"""Building blocks the convolutional families share: PyTorch-compatible conv and BatchNorm."""

from __future__ import annotations

from typing import Any

import flax.linen as nn

# kaiming_normal_(mode="fan_out"): what torchvision, the WRN and the PyramidNet references use.
# (jax's he_normal is fan-in and truncated.)
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def conv(features: int, kernel_size: int, strides: int = 1, *, dtype: Any) -> nn.Conv:
    """Bias-free square conv (a BatchNorm always follows or precedes it).

    Padding is PyTorch's symmetric k // 2 rather than "SAME", which pads a stride-2 conv on an even
    input only at the end: same output shapes, but the same pixels as the reference models too.
    """
    p = kernel_size // 2
    return nn.Conv(features, (kernel_size, kernel_size), strides=(strides, strides),
                   padding=((p, p), (p, p)), use_bias=False, kernel_init=conv_init, dtype=dtype)


# Every BatchNorm of our models keeps running statistics r <- momentum r + (1 - momentum) batch:
# PyTorch's default (its momentum 0.1 is 0.9 here). The trainer composes several updates with it
# (looksam.train.chain_batch_stats).
BATCHNORM_MOMENTUM = 0.9


def batch_norm(train: bool, *, dtype: Any) -> nn.BatchNorm:
    """PyTorch's defaults; batch statistics while training."""
    return nn.BatchNorm(use_running_average=not train, momentum=BATCHNORM_MOMENTUM, epsilon=1e-5,
                        dtype=dtype)
