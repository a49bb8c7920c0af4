"""A method's tunable settings: its declared `search_space`, overrides from a file, checks.

A space maps a setting to a range (see `MethodDeclaration.search_space`): a `TrainConfig`
field ("lr"), one of the method's options ("temperature") or an entry of a dict option
("term_weights.pull"). Every range is checked before a study starts: its shape, and both of
its ends (or every value) as real settings of the method (`TrainConfig.resolved`), so a range
the method would refuse is a one-line error instead of a failed trial.

Example:
    >>> space = search_space(TrainConfig(dataset="digits", method="simclr"),
    ...                      {"temperature": {"min": 0.05, "max": 0.5, "sampling": "log"}})
    >>> apply_values({"dataset": "digits"}, {"term_weights.pull": 0.1})
    {'dataset': 'digits', 'options': {'term_weights': {'pull': 0.1}}}
"""

from __future__ import annotations

import copy

from mixem_tf.settings import TrainConfig

__all__ = ["apply_values", "check_range", "load_space_file", "search_space"]

RANGE_KEYS = {"min", "max", "sampling"}


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_range(name: str, spec) -> dict:
    """`spec` as a complete range ({"min", "max", "sampling"} or {"values"}); ValueError
    naming `name` and the problem otherwise."""
    where = f"search space: {name}"
    if not isinstance(spec, dict):
        raise ValueError(f"{where} must be a JSON object such as "
                         '{"min": 0.01, "max": 1, "sampling": "log"}, got ' + repr(spec))
    if "values" in spec:
        values = spec["values"]
        if set(spec) != {"values"} or not isinstance(values, list) or not values:
            raise ValueError(f"{where}: a choice is {{\"values\": [a non-empty list]}}, "
                             f"got {spec!r}")
        return {"values": list(values)}
    unknown = sorted(set(spec) - RANGE_KEYS)
    if unknown or not {"min", "max"} <= set(spec):
        raise ValueError(f"{where}: a range has min, max and optionally sampling (linear or "
                         f"log), got {spec!r}")
    low, high, sampling = spec["min"], spec["max"], spec.get("sampling", "linear")
    if not _number(low) or not _number(high) or not low < high:
        raise ValueError(f"{where}: min and max must be numbers with min < max, got "
                         f"{low!r} and {high!r}")
    if sampling not in ("linear", "log"):
        raise ValueError(f"{where}: sampling must be linear or log, got {sampling!r}")
    if sampling == "log" and not low > 0:
        raise ValueError(f"{where}: a log range needs min > 0, got {low}")
    return {"min": low, "max": high, "sampling": sampling}


def apply_values(settings: dict, values: dict) -> dict:
    """A copy of `settings` (TrainConfig.from_dict's input) with `values` set: shared fields
    at the top level, options and "option.key" entries under "options"."""
    settings = copy.deepcopy(settings)
    options = settings.setdefault("options", {})
    for name, value in values.items():
        if name in TrainConfig.fields():
            settings[name] = value
        elif "." in name:
            option, key = name.split(".", 1)
            options.setdefault(option, {})[key] = value
        else:
            options[name] = value
    return settings


def _is_fixed(name: str, settings: dict) -> bool:
    """Whether `settings` (the user's own, not the recipe's) already set `name`."""
    if name in TrainConfig.fields():
        return settings.get(name) is not None
    option, _, key = name.partition(".")
    value = settings.get("options", {}).get(option)
    return value is not None and (not key or key in value)


def search_space(config: TrainConfig, overrides: dict | None = None) -> dict:
    """The space a study searches: the method's `search_space`, updated by `overrides`
    ({setting: range, or null to leave the setting alone}), minus the settings the user fixed
    in `config`. Every range is checked against the method (ValueError, one line)."""
    from mixem_tf.methods import method_declaration

    method = method_declaration(config.method)
    space = {name: dict(spec) for name, spec in method.search_space.items()}
    for name, spec in (overrides or {}).items():
        if spec is None:
            space.pop(name, None)
        else:
            space[name] = spec
    settings = config.to_dict()
    space = {name: check_range(name, spec) for name, spec in space.items()
             if not _is_fixed(name, settings)}
    if not space:
        raise ValueError(f"search space: nothing left to tune for method {config.method}")
    for name, spec in space.items():
        for value in spec.get("values") or (spec["min"], spec["max"]):
            try:
                TrainConfig.from_dict(apply_values(settings, {name: value})).resolved()
            except (TypeError, ValueError) as error:
                reason = str(error).split("\n")[0]
                raise ValueError(f"search space: {name} = {value!r} is not a valid setting of "
                                 f"method {config.method} ({reason})") from None
    return space


def load_space_file(path) -> dict:
    """The JSON object of a `--space` file; ValueError / FileNotFoundError in one line."""
    from mixem_tf.cli import read_json_object

    return read_json_object(path, "--space", "a JSON object of setting: range")
