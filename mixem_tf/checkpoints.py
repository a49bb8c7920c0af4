"""Atomic, backend-neutral checkpoints: model and optimiser variables in one `.npz` file.

A checkpoint is written to a temporary file in the same folder and moved into place with
`os.replace`, then `checkpoint.json` (the pointer to the latest one) is replaced the same way:
a kill at any moment leaves the previous checkpoint intact and pointed to. Loading checks that
every variable's path and shape match, so a checkpoint of another architecture is an error,
never a silent partial load.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
from keras import ops

__all__ = [
    "CheckpointMismatchError",
    "copy_variables",
    "latest_checkpoint",
    "load_variables",
    "restore",
    "save",
    "write_json_atomic",
]

POINTER = "checkpoint.json"


class CheckpointMismatchError(ValueError):
    """A checkpoint whose variables do not fit the model it is loaded into."""


def write_json_atomic(path, payload) -> None:
    """Writes JSON so that readers see the old file or the new one, never half of one."""
    path = Path(path)
    _replace_atomic(path, lambda handle: handle.write(json.dumps(payload, indent=2).encode()))


def _replace_atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _arrays(prefix: str, variables) -> dict[str, np.ndarray]:
    return {f"{prefix}/{i:05d}/{v.path}": ops.convert_to_numpy(v.value)
            for i, v in enumerate(variables)}


def save(directory, epoch: int, model, optimizer=None, keep: int = 2, extra: dict | None = None):
    """Saves `model.variables` (and the optimiser's) as epoch `epoch`; keeps the last `keep`."""
    directory = Path(directory)
    arrays = _arrays("model", model.variables)
    if optimizer is not None:
        arrays.update(_arrays("optimizer", optimizer.variables))
    name = f"epoch-{epoch:04d}.npz"
    _replace_atomic(directory / name, lambda handle: np.savez(handle, **arrays))
    write_json_atomic(directory / POINTER, {"epoch": epoch, "file": name, **(extra or {})})
    for old in sorted(directory.glob("epoch-*.npz"))[:-keep]:
        old.unlink(missing_ok=True)
    return directory / name


def latest_checkpoint(directory) -> tuple[Path, dict] | None:
    """(path, pointer record) of the newest complete checkpoint, or None if there is none."""
    pointer = Path(directory) / POINTER
    if not pointer.exists():
        return None
    record = json.loads(pointer.read_text())
    path = Path(directory) / record["file"]
    if not path.exists():
        raise FileNotFoundError(f"{pointer} points to {path}, which is missing")
    return path, record


def load_variables(path, prefix: str) -> list[tuple[str, np.ndarray]]:
    """The (variable path, value) pairs saved under `prefix` ("model" or "optimizer")."""
    with np.load(path) as archive:
        keys = sorted(k for k in archive.files if k.startswith(prefix + "/"))
        return [(k.split("/", 2)[2], archive[k]) for k in keys]


def _assign(variables, saved, what: str, path) -> None:
    if len(variables) != len(saved):
        raise CheckpointMismatchError(
            f"{path} holds {len(saved)} {what} variables but this model has {len(variables)}: "
            "it was saved from a different architecture or method"
        )
    for variable, (saved_path, value) in zip(variables, saved):
        if tuple(variable.shape) != value.shape:
            raise CheckpointMismatchError(
                f"{path}: variable {saved_path} has shape {value.shape}, the model's "
                f"{variable.path} has {tuple(variable.shape)}"
            )
    for variable, (_, value) in zip(variables, saved):
        variable.assign(value)


def copy_variables(source, target, what: str) -> None:
    """Copies `source` variables into `target` ones, checking count and shapes first."""
    values = [(v.path, ops.convert_to_numpy(v.value)) for v in source]
    _assign(target, values, what, "the source run")


def restore(path, model, optimizer=None) -> None:
    """Loads a checkpoint written by `save` into a built model (and built optimiser)."""
    _assign(model.variables, load_variables(path, "model"), "model", path)
    if optimizer is not None:
        _assign(optimizer.variables, load_variables(path, "optimizer"), "optimizer", path)
