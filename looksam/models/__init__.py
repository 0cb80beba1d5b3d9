"""Model registry: name -> Flax module constructor.

Each entry is a module class with the paper's settings preset; `create` overrides any field, so a
CPU run shrinks a model without a class of its own: `create("vit_s16", patch_size=4, image_size=32)`.
"""

from __future__ import annotations

import dataclasses
import functools

from looksam.models.cnn import CNN
from looksam.models.pyramidnet import PyramidNet
from looksam.models.resnet import ResNet
from looksam.models.vit import ViT
from looksam.models.wide_resnet import WideResNet

_partial = functools.partial

MODELS = {
    "cnn": CNN,
    # CIFAR (kuangliu/pytorch-cifar layout)
    "resnet18": _partial(ResNet, stage_sizes=(2, 2, 2, 2), block="basic"),
    "resnet50": _partial(ResNet, stage_sizes=(3, 4, 6, 3), block="bottleneck"),
    "wrn28_10": _partial(WideResNet, depth=28, widen_factor=10),
    # ESAM's "PyramidNet-110": basic blocks, additive widening alpha = 270 (docs in pyramidnet.py)
    "pyramidnet110": _partial(PyramidNet, depth=110, alpha=270),
    # ImageNet (LookSAM Table 10 for the ViTs)
    "vit_s16": _partial(ViT, hidden_size=384, num_heads=6, patch_size=16),
    "vit_s32": _partial(ViT, hidden_size=384, num_heads=6, patch_size=32),
    "vit_b16": _partial(ViT, hidden_size=768, num_heads=12, patch_size=16),
    "vit_b32": _partial(ViT, hidden_size=768, num_heads=12, patch_size=32),
    "resnet50_imagenet": _partial(ResNet, stage_sizes=(3, 4, 6, 3), block="bottleneck", stem="imagenet",
                                  num_classes=1000),
    "resnet101_imagenet": _partial(ResNet, stage_sizes=(3, 4, 23, 3), block="bottleneck", stem="imagenet",
                                   num_classes=1000),
}


def fields(name: str) -> list[str]:
    """The fields `create(name, ...)` accepts."""
    cls = getattr(MODELS[name], "func", MODELS[name])
    return [f.name for f in dataclasses.fields(cls) if f.init and f.name not in ("parent", "name")]


def create(name: str, **overrides):
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    unknown = sorted(set(overrides) - set(fields(name)))
    if unknown:
        raise ValueError(f"model {name!r} has no field {', '.join(unknown)}; its fields are {fields(name)}")
    return MODELS[name](**overrides)
