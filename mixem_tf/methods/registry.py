"""The one registry of clustering methods: name → `ClusteringMethod` subclass."""

from __future__ import annotations

import keras

__all__ = ["METHODS", "method_class", "register_method"]

METHODS: dict = {}


def register_method(cls):
    """Class decorator: makes `cls` buildable as `--method cls.name` and Keras-serialisable."""
    if not cls.name or cls.name in METHODS:
        raise ValueError(f"a method needs a new, non-empty name, got {cls.name!r}")
    METHODS[cls.name] = keras.saving.register_keras_serializable("mixem_tf")(cls)
    return cls


def method_class(name: str):
    """The registered method called `name`; ValueError listing the names otherwise."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(sorted(METHODS))}")
    return METHODS[name]
