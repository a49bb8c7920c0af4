"""Atomic, verified, backend-neutral checkpoints: model and optimiser variables in one `.npz`.

A checkpoint is written to a temporary file in the same folder and moved into place with
`os.replace`, then `checkpoint.json` (the pointer to the latest one, with the SHA-256 of every
kept checkpoint) is replaced the same way: a kill at any moment leaves the previous checkpoint
intact and pointed to. Files are created with the user's umask, as `open` creates them.

`latest_checkpoint` verifies what it returns: a checkpoint whose checksum differs (truncated,
emptied, overwritten), or that no longer reads as an archive, is named in a
`CheckpointWarning` and skipped for the newest intact one; an unreadable `checkpoint.json` is
rebuilt from the intact files (in memory; the next save rewrites it). Checkpoints written
before checksums were recorded are checked by reading every array (the zip format's CRC-32).
Files are read with `allow_pickle=False` and read errors become `CorruptCheckpointError`.
Loading checks that every variable's path and shape match, so a checkpoint of another
architecture is an error, never a silent partial load.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import warnings
import zipfile
from pathlib import Path

import numpy as np
from mixem_tf.atomic import replace_atomic, write_json_atomic  # noqa: F401  (re-exported)

__all__ = [
    "CheckpointMismatchError",
    "CheckpointWarning",
    "CorruptCheckpointError",
    "copy_variables",
    "latest_checkpoint",
    "load_variables",
    "restore",
    "save",
    "write_json_atomic",
]

POINTER = "checkpoint.json"
_FILE_NAME = re.compile(r"epoch-(\d+)\.npz")
_READ_ERRORS = (OSError, EOFError, ValueError, zipfile.BadZipFile)


class CheckpointMismatchError(ValueError):
    """A checkpoint whose variables do not fit the model it is loaded into."""


class CorruptCheckpointError(ValueError):
    """A checkpoint that cannot be read back (truncated, empty or not an archive), or a
    checkpoint folder with no intact checkpoint left; the message names the file(s)."""


class CheckpointWarning(UserWarning):
    """A corrupt checkpoint was skipped or `checkpoint.json` rebuilt; the message says which."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _arrays(prefix: str, variables) -> dict[str, np.ndarray]:
    return {f"{prefix}/{i:05d}/{v.path}": np.asarray(v.numpy())
            for i, v in enumerate(variables)}


def _read_pointer(pointer: Path) -> dict | None:
    """checkpoint.json's record, or None when there is none.

    Raises:
        CorruptCheckpointError: not JSON, or not a record naming an epoch and a file.
    """
    try:
        text = pointer.read_bytes()
    except FileNotFoundError:
        return None
    try:
        record = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CorruptCheckpointError(f"{pointer} is not valid JSON ({error})") from None
    if not (isinstance(record, dict) and isinstance(record.get("file"), str)
            and type(record.get("epoch")) is int):  # noqa: E721  (bool is not an epoch)
        raise CorruptCheckpointError(f"{pointer} does not name a checkpoint file and epoch")
    return record


def _entries(record: dict | None) -> dict[str, dict]:
    """{file name: its record} of every checkpoint a pointer record knows. A pointer written
    before checksums were recorded knows only its own file (and no checksum)."""
    if record is None:
        return {}
    entries = record.get("checkpoints")
    if isinstance(entries, dict):
        return {name: entry for name, entry in entries.items() if isinstance(entry, dict)}
    return {record["file"]: {k: v for k, v in record.items() if k != "checkpoints"}}


def save(directory, epoch: int, model, optimizer=None, keep: int = 2, extra: dict | None = None):
    """Saves `model.variables` (and the optimiser's) as epoch `epoch`; keeps the last `keep`.

    checkpoint.json becomes this checkpoint's record (epoch, file, sha256, `extra`) plus
    "checkpoints": the records of every kept file, so an older one can be verified too."""
    directory = Path(directory)
    arrays = _arrays("model", model.variables)
    if optimizer is not None:
        arrays.update(_arrays("optimizer", optimizer.variables))
    name = f"epoch-{epoch:04d}.npz"
    replace_atomic(directory / name, lambda handle: np.savez(handle, **arrays))
    entry = {"epoch": epoch, "file": name, "sha256": _sha256(directory / name), **(extra or {})}
    try:
        known = _entries(_read_pointer(directory / POINTER))
    except CorruptCheckpointError:
        known = {}  # the older files are then verified by reading them
    files = sorted(directory.glob("epoch-*.npz"))
    kept = {p.name: known[p.name] for p in files[-keep:] if p.name in known}
    kept[name] = entry
    write_json_atomic(directory / POINTER, {**entry, "checkpoints": kept})
    for old in files[:-keep]:
        old.unlink(missing_ok=True)
    return directory / name


@contextlib.contextmanager
def _archive(path):
    """np.load(path) with allow_pickle=False; a file that is not a readable archive, at
    opening or while an array is read, raises CorruptCheckpointError naming it."""
    try:
        archive = np.load(path, allow_pickle=False)
    except _READ_ERRORS as error:
        raise CorruptCheckpointError(f"{path} is not a readable checkpoint: "
                                     f"{_why_unreadable(error)}") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise CorruptCheckpointError(f"{path} is not a readable checkpoint: a single array, "
                                     "not an .npz archive")
    with archive:
        try:
            yield archive
        except _READ_ERRORS as error:
            raise CorruptCheckpointError(f"{path} is not a readable checkpoint: "
                                         f"{_why_unreadable(error)}") from None


def _why_unreadable(error: BaseException) -> str:
    """A short reason, never numpy's advice to load a non-archive with pickle."""
    if isinstance(error, FileNotFoundError):
        return "the file is missing"
    if isinstance(error, EOFError):
        return "the file is empty"
    if isinstance(error, zipfile.BadZipFile):
        return f"truncated or damaged archive ({error})"
    if isinstance(error, ValueError):
        return "not an .npz archive"
    return f"{type(error).__name__}: {error}"


def _problem(path: Path, sha256: str | None) -> str | None:
    """Why the checkpoint at `path` is unusable (a sentence naming it), or None if intact."""
    if not path.is_file():
        return f"{path} is missing"
    if path.stat().st_size == 0:
        return f"{path} is empty"
    if sha256 is not None:
        return None if _sha256(path) == sha256 else (
            f"{path} does not match its SHA-256 in {POINTER} (truncated or changed after "
            "it was saved)")
    try:
        with _archive(path) as archive:
            for key in archive.files:
                archive[key]
    except CorruptCheckpointError as error:
        return str(error)
    return None


def latest_checkpoint(directory) -> tuple[Path, dict] | None:
    """(path, record) of the newest intact checkpoint, or None if there is no checkpoint.

    `record` holds at least "epoch" and "file". The checkpoint checkpoint.json points to is
    verified against its SHA-256; when it is unusable, the older kept ones are tried in turn.
    When checkpoint.json is unreadable, or missing beside checkpoint files, the newest intact
    file is used. Each fallback is one `CheckpointWarning` naming what was skipped and what
    is used.

    Raises:
        CorruptCheckpointError: there are checkpoints, but none is intact.
    """
    directory = Path(directory)
    pointer = directory / POINTER
    on_disk = {p.name: int(m.group(1)) for p in directory.glob("epoch-*.npz")
               if (m := _FILE_NAME.fullmatch(p.name))}
    try:
        record = _read_pointer(pointer)
        notes = [] if record or not on_disk else [f"{pointer} is missing"]
    except CorruptCheckpointError as error:
        if not on_disk:
            raise CorruptCheckpointError(f"{error}, and {directory} holds no checkpoint file "
                                         "to rebuild it from") from None
        record, notes = None, [str(error)]
    if record is None and not on_disk:
        return None
    if notes:
        notes[0] += " (ignored; the next save rewrites it)"
    candidates = {name: {"epoch": epoch, "file": name} for name, epoch in on_disk.items()}
    candidates.update(_entries(record))
    newest = record["epoch"] if record else max(on_disk.values())
    ordered = sorted((entry for entry in candidates.values()
                      if isinstance(entry.get("file"), str) and type(entry.get("epoch")) is int
                      and entry["epoch"] <= newest),  # later files: a save that was cut short
                     key=lambda entry: entry["epoch"], reverse=True)
    skipped = []
    for entry in ordered:
        path = directory / entry["file"]
        problem = _problem(path, entry.get("sha256"))
        if problem is not None:
            skipped.append(problem)
            continue
        if notes or skipped:  # raised here, so a caller that looks twice warns once
            warnings.warn("; ".join(notes + skipped) + f"; using {path} (epoch "
                          f"{entry['epoch']}), the newest intact checkpoint", CheckpointWarning)
        return path, {k: v for k, v in entry.items() if k != "checkpoints"}
    raise CorruptCheckpointError(f"no intact checkpoint in {directory}: " + "; ".join(skipped))


def load_variables(path, prefix: str) -> list[tuple[str, np.ndarray]]:
    """The (variable path, value) pairs saved under `prefix` ("model" or "optimizer").

    Raises:
        CorruptCheckpointError: `path` is not a readable checkpoint.
    """
    with _archive(path) as archive:
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
    values = [(v.path, np.asarray(v.numpy())) for v in source]
    _assign(target, values, what, "the source run")


def restore(path, model, optimizer=None) -> None:
    """Loads a checkpoint written by `save` into a built model (and built optimiser)."""
    _assign(model.variables, load_variables(path, "model"), "model", path)
    if optimizer is not None:
        _assign(optimizer.variables, load_variables(path, "optimizer"), "optimizer", path)
