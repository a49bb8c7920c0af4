"""The decoded-image cache: images decoded once into a memory-mapped file that every command
shares (training, resume, export, ONNX parity, tune trials).

Where: ``$MIXEM_TF_CACHE`` if set, else ``$XDG_CACHE_HOME/mixem-tf``, else
``~/.cache/mixem-tf``. Moving it: set ``MIXEM_TF_CACHE`` (the old folder can be moved
there or deleted). Clearing it: ``python -m mixem_tf.data.cache --clear`` (or delete the folder);
anything missing is decoded again on next use. It costs ``H × W × C`` bytes per image (27,648
at 96 × 96 RGB, 3,072 at 32 × 32) plus a small index.

One entry is one folder of the cache named after what it holds (a source at an image size,
channel count and crop rule), with:

    index.npz          the file list, each file's size and modification time, its row in the
                       image file (-1: skipped, with its reason), and a JSON header
    images-TOKEN.u8    the decoded uint8 images [N, H, W, C], row after row

A build writes a new ``images-TOKEN.u8`` in full, flushes it, then replaces ``index.npz``
atomically (`os.replace`): a killed build leaves an image file no index names (removed by the
next build), never an entry that looks complete. Builders of one entry take an exclusive
`fcntl.flock` on its ``lock`` file, so a second builder waits and then finds the entry built.
Readers take no lock: an image file is never changed once an index names it (a rebuild writes
a new one), and one removed while mapped stays readable by those that map it (POSIX).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import mmap
import os
import re
import shutil
import sys
import time
import uuid
import zipfile
from pathlib import Path

import numpy as np

__all__ = ["CACHE_ENV", "CacheEntry", "cache_root", "release_pages"]

CACHE_ENV = "MIXEM_TF_CACHE"
INDEX_FILE = "index.npz"
LOCK_FILE = "lock"
IMAGES_PREFIX = "images-"
FORMAT_VERSION = 1  # bump when the decoding or the layout changes: old entries are not read


def cache_root() -> Path:
    """The cache folder: ``$MIXEM_TF_CACHE``, ``$XDG_CACHE_HOME/mixem-tf`` or
    ``~/.cache/mixem-tf``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.path.expanduser(os.environ[CACHE_ENV]))
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mixem-tf"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class CacheEntry:
    """One entry of the cache: `identity` (a JSON-able dict: source, size, channels, crop
    rule) names it; `label` is a readable part of its folder name."""

    def __init__(self, identity: dict, label: str = "", root: Path | None = None):
        self.identity = {**identity, "format": FORMAT_VERSION}
        text = json.dumps(self.identity, sort_keys=True)
        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", label)[:40].strip("_.") or "entry"
        self.path = Path(root or cache_root()) / f"{slug}-{digest}"

    # -- reading --------------------------------------------------------------------------
    def read_index(self) -> dict | None:
        """The entry's index arrays plus ``"header"`` (a dict), or None when there is no
        complete entry (missing, unreadable, or naming an image file of the wrong size)."""
        try:
            with np.load(self.path / INDEX_FILE, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
            header = json.loads(bytes(arrays.pop("header")).decode())
            if header.get("identity") != self.identity:
                return None
            shape = tuple(header["shape"])
            if header["images"] is not None:
                size = (self.path / header["images"]).stat().st_size
                if size != int(np.prod(shape)):
                    return None
        except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile):
            return None  # damaged: rebuilt
        return {**arrays, "header": header}

    def open_images(self, index: dict) -> np.ndarray:
        """The entry's images as a read-only memory map [N, H, W, C] (an empty array for N = 0)."""
        header = index["header"]
        shape = tuple(header["shape"])
        if header["images"] is None:
            return np.zeros(shape, np.uint8)
        return np.memmap(self.path / header["images"], np.uint8, "r", shape=shape)

    # -- building -------------------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self, announce=None):
        """Holds the entry's build lock; `announce()` is called once if another process holds
        it (we wait). Released when the process dies, so a killed builder blocks no one."""
        import fcntl

        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / LOCK_FILE, "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if announce:
                    announce()
                fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def new_images(self, shape) -> tuple[Path, np.ndarray | None]:
        """A new, zero-filled (sparse) image file of `shape`, mapped writable; call under
        `locked`. None as the map when `shape` holds no image."""
        path = self.path / f"{IMAGES_PREFIX}{uuid.uuid4().hex}.u8"
        with open(path, "wb") as handle:
            handle.truncate(int(np.prod(shape)))
        if int(np.prod(shape)) == 0:
            return path, None
        return path, np.memmap(path, np.uint8, "r+", shape=tuple(shape))

    def commit(self, images_path: Path, shape, arrays: dict, header: dict) -> None:
        """Makes `images_path` (already written) the entry's images: the file is truncated to
        `shape`, flushed to disk, then the index is replaced atomically; older image files
        are removed. Call under `locked`."""
        nbytes = int(np.prod(shape))
        with open(images_path, "r+b") as handle:
            handle.truncate(nbytes)
            os.fsync(handle.fileno())
        name = images_path.name if nbytes else None
        if not nbytes:
            images_path.unlink()
        header = {**header, "identity": self.identity, "shape": [int(v) for v in shape],
                  "images": name, "written": time.time()}
        blob = np.frombuffer(json.dumps(header).encode(), np.uint8)
        tmp = self.path / f".{INDEX_FILE}.{uuid.uuid4().hex}.tmp"
        with open(tmp, "wb") as handle:
            np.savez(handle, header=blob, **arrays)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path / INDEX_FILE)
        _fsync_dir(self.path)
        self.remove_stale(keep=name)

    def remove_stale(self, keep: str | None) -> None:
        """Removes image files and temporary indexes other than `keep` (left by killed or
        earlier builds). Call under `locked`."""
        for path in self.path.iterdir():
            stale_images = path.name.startswith(IMAGES_PREFIX) and path.name != keep
            if stale_images or path.name.endswith(".tmp"):
                path.unlink(missing_ok=True)


def join_paths(paths) -> np.ndarray:
    """File names as one uint8 array ("\\0"-separated UTF-8), for an index."""
    text = "\0".join(paths).encode("utf-8", "surrogateescape")
    return np.frombuffer(text, np.uint8)


def split_paths(array: np.ndarray) -> list[str]:
    """The inverse of `join_paths`."""
    if array.size == 0:
        return []
    return bytes(array).decode("utf-8", "surrogateescape").split("\0")


def release_pages(images: np.ndarray) -> None:
    """Drops the pages of `images`' memory map from this process (they stay in the page
    cache, so reading them again costs no disk): after reading a whole epoch through a map,
    the resident set is back to what the model needs. Does nothing for an in-memory array."""
    base = images
    while base is not None and not isinstance(base, mmap.mmap):
        base = getattr(base, "base", None)
    if base is not None and hasattr(base, "madvise"):
        base.madvise(mmap.MADV_DONTNEED)


def _entries(root: Path):
    return sorted(p for p in root.iterdir() if (p / LOCK_FILE).exists()) if root.is_dir() else []


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mixem_tf.data.cache",
        description="The decoded-image cache: list its entries or clear it. " + (
            f"It lives in ${CACHE_ENV}, else $XDG_CACHE_HOME/mixem-tf, else ~/.cache/mixem-tf."))
    parser.add_argument("--clear", action="store_true", help="delete every entry")
    args = parser.parse_args(argv)
    root = cache_root()
    entries = _entries(root)
    if args.clear:
        for entry in entries:
            shutil.rmtree(entry, ignore_errors=True)
        print(f"cleared {len(entries)} entries from {root}")
        return 0
    total = 0
    for entry in entries:
        size = _size(entry)
        total += size
        print(f"{size / 2**20:10.1f} MiB  {entry.name}")
    print(f"{total / 2**20:10.1f} MiB  in {len(entries)} entries under {root}")
    return 0


if __name__ == "__main__":
    from mixem_tf.cli import run

    sys.exit(run(main))
