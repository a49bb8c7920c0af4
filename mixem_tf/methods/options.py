"""A method's own settings: a dataclass of `option` fields, checked with one-line errors.

Each method declares `Options` (a `MethodOptions` subclass); `TrainConfig` keeps only what every
run shares and holds the method's options as a dict. An option's metadata says how the command
line parses it and which values are valid, so `trainers.fit` offers every method's options as
flags and `--help` shows them with their method.

Example:
    >>> @dataclass
    ... class Options(MethodOptions):
    ...     temperature: float = option(0.5, "NT-Xent temperature τ", positive=True)
    >>> Options.from_dict({"temperature": 0.2}, "simclr").temperature
    0.2
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

__all__ = ["MethodOptions", "option"]

KINDS = {int: "an integer", float: "a number", str: "a string", dict: "a JSON object"}


def option(default, help: str, *, kind=None, minimum=None, positive: bool = False,
           choices=None):
    """A dataclass field of a method's options.

    Args:
        default: the value when neither the recipe nor the user sets it (a dict is copied).
        help: the `--help` text.
        kind: int, float, str or dict; default: the type of `default`.
        minimum: the smallest valid value (inclusive); `positive` means > 0.
        choices: the valid values.
    """
    kind = kind or type(default)
    if kind not in KINDS:
        raise TypeError(f"an option's kind must be one of {list(KINDS)}, got {kind}")
    metadata = {"help": help, "kind": kind, "minimum": minimum, "positive": positive,
                "choices": tuple(choices) if choices else None}
    if isinstance(default, dict):
        return dataclasses.field(default_factory=lambda: dict(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclass
class MethodOptions:
    """Base of every method's options; subclasses add `option` fields and may add `check`."""

    @classmethod
    def fields(cls) -> dict:
        """name → dataclasses.Field of every option."""
        return {f.name: f for f in dataclasses.fields(cls)}

    @classmethod
    def from_dict(cls, values: dict, method: str) -> "MethodOptions":
        """Options from a dict of some or all fields, checked; unknown names are an error."""
        unknown = sorted(set(values) - set(cls.fields()))
        if unknown:
            raise ValueError(f"{', '.join(unknown)}: not a setting of method {method} (its "
                             f"settings: {', '.join(cls.fields()) or 'none'})")
        options = cls(**values)
        options.validate()
        return options

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        """ValueError naming the first option of the wrong type or out of range."""
        for name, spec in self.fields().items():
            value, meta = getattr(self, name), spec.metadata
            if value is None and spec.default is None:
                continue
            kind = meta["kind"]
            accepted = (int, float) if kind is float else (kind,)
            if isinstance(value, bool) or not isinstance(value, accepted):
                raise ValueError(f"{name} must be {KINDS[kind]}, got {value!r}")
            if meta["choices"] and value not in meta["choices"]:
                raise ValueError(f"{name} must be one of {list(meta['choices'])}, got {value!r}")
            if meta["positive"] and not value > 0:
                raise ValueError(f"{name} must be positive, got {value}")
            if meta["minimum"] is not None and not value >= meta["minimum"]:
                raise ValueError(f"{name} must be >= {meta['minimum']}, got {value}")
        self.check()

    def check(self) -> None:
        """Checks across fields or inside dict-valued ones (ValueError); none by default."""
