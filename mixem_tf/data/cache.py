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

__all__ = ["CACHE_ENV", "CacheEntry", "MAPPED_BYTES", "cache_root", "read_rows"]

CACHE_ENV = "MIXEM_TF_CACHE"
INDEX_FILE = "index.npz"
LOCK_FILE = "lock"
IMAGES_PREFIX = "images-"
FORMAT_VERSION = 1  # bump when the decoding or the layout changes: old entries are not read
MAPPED_BYTES = 2**30  # a memory map up to this size is read through the map (`read_rows`)


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


def read_rows(images: np.ndarray, rows) -> np.ndarray:
    """``images[rows]`` (`rows`: a slice or integer indices along the first axis). From a
    memory map of a file larger than `MAPPED_BYTES`, the rows are read from the file
    (`os.preadv`) into memory, not through the map: reading a row through a map makes the
    kernel map the pages around it too (fault-around, 64 KiB on Linux), so a shuffled epoch
    would map the whole file into the process, while a read leaves the pages in the page
    cache only. A smaller map (faster: its pages stay mapped, at most `MAPPED_BYTES`) and an
    in-memory array are indexed as usual (`np.take`; a slice stays a view)."""
    located = _file_rows(images) if images.nbytes > MAPPED_BYTES else None
    if located is None:
        return images[rows] if isinstance(rows, slice) else np.take(images, rows, axis=0)
    path, first_byte, row_bytes = located
    count = len(images)
    if isinstance(rows, slice):
        start, stop, step = rows.indices(count)
        if step == 1:
            return _read(path, images, [(first_byte + start * row_bytes,
                                        max(0, stop - start) * row_bytes)], max(0, stop - start))
        rows = range(start, stop, step)
    rows = np.asarray(rows, np.int64).reshape(-1)
    outside = rows[(rows < -count) | (rows >= count)]
    if outside.size:  # numpy's words
        raise IndexError(f"index {outside[0]} is out of bounds for axis 0 with size {count}")
    rows = np.where(rows < 0, rows + count, rows)
    return _read(path, images, [(first_byte + int(r) * row_bytes, row_bytes)
                                for r in rows.tolist()], len(rows))


def _file_rows(images):
    """(file, byte position of row 0, bytes per row) of a C-contiguous array whose memory is a
    memory map of a file (an `np.memmap` or a view of one); None for anything else."""
    if images.ndim == 0 or not images.flags.c_contiguous:
        return None
    memmap, mapping = None, images
    while mapping is not None and not isinstance(mapping, mmap.mmap):
        if memmap is None and isinstance(mapping, np.memmap) and mapping.filename:
            memmap = mapping
        mapping = getattr(mapping, "base", None)
    if memmap is None or mapping is None:
        return None
    mapped_at = np.frombuffer(mapping, np.uint8).ctypes.data  # where the map starts in memory
    file_start = memmap.offset - memmap.offset % mmap.ALLOCATIONGRANULARITY
    row_bytes = images.itemsize * int(np.prod(images.shape[1:]))
    return memmap.filename, file_start + images.ctypes.data - mapped_at, row_bytes


def _read(path, images, ranges, count: int) -> np.ndarray:
    """`count` rows of `images`' shape and type read from `path`'s byte `ranges` in order."""
    out = np.empty((count, *images.shape[1:]), images.dtype)
    buffer, done = memoryview(out.reshape(-1).view(np.uint8)), 0
    with open(path, "rb", buffering=0) as handle:
        for position, size in ranges:
            while size:  # one read returns at most ~2 GiB
                got = os.preadv(handle.fileno(), [buffer[done:done + size]], position)
                if got == 0:
                    raise OSError(f"{path}: shorter than its index says (changed while in use?)")
                done, position, size = done + got, position + got, size - got
    return out


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
