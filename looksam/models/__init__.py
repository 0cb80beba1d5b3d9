"""Model registry: name -> Flax module constructor."""

from __future__ import annotations

from looksam.models.cnn import CNN

MODELS = {"cnn": CNN}


def create(name: str, **kwargs):
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    return MODELS[name](**kwargs)
