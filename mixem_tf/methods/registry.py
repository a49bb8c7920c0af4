"""The one registry of clustering methods: name → `MethodDeclaration` subclass (no Keras)."""

from __future__ import annotations

__all__ = ["METHODS", "import_models", "method_class", "method_declaration", "register_method"]

METHODS: dict = {}


def register_method(cls):
    """Class decorator on a method's declaration: makes it `--method cls.name`."""
    if not cls.name or cls.name in METHODS:
        raise ValueError(f"a method needs a new, non-empty name, got {cls.name!r}")
    METHODS[cls.name] = cls
    return cls


def method_declaration(name: str):
    """The declaration of the method called `name`; ValueError listing the names otherwise."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(sorted(METHODS))}")
    return METHODS[name]


def method_class(name: str):
    """The Keras model class of the method called `name` (loads Keras)."""
    return method_declaration(name).model_class()


def import_models() -> None:
    """Imports every registered method's model, registering each with Keras' serialisation
    (what `keras.saving.load_model` of a method's `.keras` file needs)."""
    for declaration in METHODS.values():
        declaration.model_class()
