"""`folder:PATH`: the user's own images, decoded with Pillow.

Rules:
- Files are found recursively (symbolic links followed, each directory visited once; hidden
  files and directories, whose names start with ".", are ignored) and sorted by relative path,
  so the order, and therefore everything downstream, is deterministic.
- Image files are those ending in one of `IMAGE_EXTENSIONS` (any case): JPEG, PNG, BMP, GIF,
  WebP, TIFF; `trainers.predict` accepts the same list. GIFs, animated WebPs and multi-page
  TIFFs give their first frame.
- Images are converted to RGB (default) or, with ``channels=1``, to grey (luma, ITU-R 601),
  the way torchvision's ImageFolder loader does (``convert("RGB")``: alpha is dropped, not
  composited; no EXIF rotation), decoded at full resolution, then resized to `image_size`
  with `resize_images` (Pillow's antialiased BILINEAR filter in float, rounded once: the
  resampling of the exported graph, so a served file gives the cluster training gave it),
  stretching to the target aspect ratio (``Resize((h, w))``) unless ``keep_aspect=True``,
  which centre-crops to the target aspect ratio first.
- Decoded images go to the decoded cache (`mixem_tf.data.cache`, one entry per folder, size,
  channels and crop rule), decoded by `num_workers` processes; later loads map it and decode
  only files added or changed (size or modification time) since.
- Labels: when every decoded image lies inside a first-level sub-folder, the sub-folder names,
  sorted, become the classes (``class_names``) and their index the label, like ImageFolder.
  Otherwise labels are None (a plain unlabelled collection).
- Files that cannot be decoded, files without an image extension and anything that is not a
  regular file (named pipes, devices, sockets, broken links: never opened) are skipped. The dataset
  (a `FolderDataset`) carries a `FolderScan`: how many files were found, used and skipped,
  and every skipped file with its reason (`FolderScan.write_skipped` writes them as CSV). One
  short `SkippedFilesWarning` gives the counts and the first few.
- A path that is missing is a FileNotFoundError; a file, not a folder, a ValueError (both one
  line at the command line).
"""

from __future__ import annotations

import array
import csv
import dataclasses
import os
import stat
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from mixem_tf.data.dataset import ImageDataset, parse_image_size, resize_images

__all__ = ["DEFAULT_FOLDER_IMAGE_SIZE", "FOLDER_PREFIX", "FolderDataset", "FolderScan",
           "IMAGE_EXTENSIONS", "SkippedFilesWarning", "absolute_folder_name", "decode_image",
           "describe_error", "file_problem", "is_image_file", "list_files", "load_folder",
           "read_image", "relative_files", "unsupported_format"]

# Formats Pillow reads without plug-ins; training and trainers.predict accept exactly these.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
DEFAULT_FOLDER_IMAGE_SIZE = 96  # STL-10's size; what MiCE uses for its ImageFolder datasets
FOLDER_PREFIX = "folder:"
_SHOWN_PATHS = 3  # how many skipped files the warning names
_REASON_CHARS = 80  # longest reason the warning shows (the CSV has the whole one)
_MAX_WORKERS = 8  # decoding processes at most
_DECODE_CHUNK = 64  # files per task of a decoding process
_COPY_ROWS = 4096  # images per copy when a cache entry is rebuilt (bounds the memory used)
_PROGRESS_SECONDS = 5.0


class SkippedFilesWarning(UserWarning):
    """`load_folder` skipped files; the dataset's `scan` lists every one with its reason."""


def is_image_file(path) -> bool:
    """True when `path` has one of the supported image extensions (any case)."""
    return os.path.splitext(os.fspath(path))[1].lower() in IMAGE_EXTENSIONS


def unsupported_format(path) -> str:
    """The reason given for a file whose extension is not a supported image format."""
    suffix = Path(path).suffix.lower() or "no extension"
    return f"not a supported image format ({suffix})"


def describe_error(error: BaseException) -> str:
    """Why a file could not be decoded, in one short line (Pillow's messages repeat the
    file's whole path; this does not)."""
    from PIL import UnidentifiedImageError

    if isinstance(error, UnidentifiedImageError):
        return "not a readable image (contents not recognised)"
    text = str(error).splitlines()[0] if str(error) else ""
    return f"not a readable image ({type(error).__name__}{': ' + text if text else ''})"


def absolute_folder_name(name: str) -> str:
    """`folder:RELATIVE` (or `folder:~/x`) as `folder:/absolute/path`, links kept as typed;
    any other dataset name unchanged. A run stores this, so resuming and exporting it work
    from any working directory."""
    if not name.startswith(FOLDER_PREFIX) or not name[len(FOLDER_PREFIX):].strip():
        return name
    return FOLDER_PREFIX + os.path.abspath(os.path.expanduser(name[len(FOLDER_PREFIX):]))


@dataclasses.dataclass(frozen=True)
class FolderScan:
    """What `load_folder` found: every non-hidden file, and those it skipped, with why.

    Attributes:
        root: the folder (absolute, links resolved).
        found: non-hidden files under it.
        skipped: (absolute path, reason) of every file not used, in path order.
    """

    root: Path
    found: int
    skipped: tuple[tuple[Path, str], ...] = ()

    @property
    def used(self) -> int:
        return self.found - len(self.skipped)

    def summary(self, listed_in=None) -> str:
        """One line: "folder:ROOT: N files found, U images used, S skipped (...)", naming
        `listed_in` (where the full list was written) or else the first few skipped files."""
        text = f"{FOLDER_PREFIX}{self.root}: {self.found} files found, {self.used} images used"
        if not self.skipped:
            return text
        unsupported = sum(reason.startswith("not a supported") for _, reason in self.skipped)
        kinds = [f"{n} {kind}" for n, kind in ((len(self.skipped) - unsupported, "unreadable"),
                                               (unsupported, "not a supported image format"))
                 if n]
        text += f", {len(self.skipped)} skipped ({', '.join(kinds)})"
        if listed_in is not None:
            return f"{text}; the list: {listed_in}"
        shown = [f"{path.relative_to(self.root)} ({_shorten(reason)})"
                 for path, reason in self.skipped[:_SHOWN_PATHS]]
        more = len(self.skipped) - len(shown)
        return f"{text}, e.g. {'; '.join(shown)}" + (f"; and {more} more" if more else "")

    def write_skipped(self, path) -> None:
        """Writes every skipped file as CSV rows `path,reason` (absolute paths)."""
        with open(path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(("path", "reason"))
            writer.writerows((str(p), reason) for p, reason in self.skipped)


@dataclasses.dataclass(eq=False, repr=False)
class FolderDataset(ImageDataset):
    """An `ImageDataset` from `load_folder`, with the `FolderScan` that made it and the file of
    each image, in order (both kept through resizing and channel conversion)."""

    scan: FolderScan | None = None
    paths: tuple[Path, ...] | None = None


def _shorten(reason: str) -> str:
    return reason if len(reason) <= _REASON_CHARS else reason[:_REASON_CHARS - 1] + "…"


def relative_files(root) -> list[str]:
    """The relative paths of all non-hidden files under `root`, sorted by their parts,
    following links but never a directory twice (plain strings: a million files list in
    seconds)."""
    seen = set()
    found = []
    nested = False
    root = os.fspath(root)
    for directory, subdirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(directory)
        if real in seen:
            subdirs[:] = []
            continue
        seen.add(real)
        subdirs[:] = [d for d in subdirs if not d.startswith(".")]
        prefix = os.path.relpath(directory, root)
        prefix = "" if prefix == "." else prefix + os.sep
        nested = nested or (bool(prefix) and bool(files))
        found.extend([prefix + f for f in files if f[:1] != "."])
    # By parts: the separator ranks below every character a name can hold.
    found.sort(key=(lambda rel: rel.replace(os.sep, "\0")) if nested else None)
    return found


def list_files(root: Path) -> list[Path]:
    """All non-hidden files under `root` (`relative_files`, as absolute paths)."""
    return [Path(root, rel) for rel in relative_files(root)]


def _centre_crop_box(width: int, height: int, target_w: int, target_h: int):
    """(left, upper, right, lower) of the largest centred box with the target aspect ratio."""
    if width * target_h > height * target_w:  # too wide
        new_w = max(1, round(height * target_w / target_h))
        left = (width - new_w) // 2
        return left, 0, left + new_w, height
    new_h = max(1, round(width * target_h / target_w))
    upper = (height - new_h) // 2
    return 0, upper, width, upper + new_h


def _to_mode(image, channels: int):
    """`image` as an 8-bit "RGB" or "L" Pillow image."""
    from PIL import Image

    mode = image.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        values = np.asarray(image, dtype=np.float64)
        if values.max(initial=0) > 255:  # 16-bit data: keep the top 8 bits
            values = values / 257.0
        image = Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), "L")
    elif mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")  # what Pillow recommends for palette + transparency
    target = "RGB" if channels == 3 else "L"
    return image if image.mode == target else image.convert(target)


def decode_image(path, size_hw: tuple[int, int], channels: int = 3,
                 keep_aspect: bool = False) -> np.ndarray:
    """One image file as training sees it, uint8 [h, w, C]: `read_image` at full resolution
    (Pillow's accurate integer IDCT for JPEGs, never reduced-scale decoding), an optional
    centre crop, then `resize_images`: the float resampling the exported graph applies to
    images of another size, rounded once. So the served model, given the same file, sees the
    pixels training saw (export/inputs.py decodes JPEGs with the same IDCT)."""
    array = read_image(path, channels)
    if keep_aspect:
        left, upper, right, lower = _centre_crop_box(array.shape[1], array.shape[0],
                                                     size_hw[1], size_hw[0])
        array = array[upper:lower, left:right]
    return resize_images(array[None], size_hw)[0]


def read_image(path, channels: int | None = None) -> np.ndarray:
    """One image at its own size as uint8 [H, W, C], converted as the loader converts:
    `channels` 1 (grey) or 3 (RGB); None keeps grey images grey and makes the rest RGB.

    Raises:
        OSError (Pillow's UnidentifiedImageError among them): not a readable image.
    """
    from PIL import Image

    with Image.open(path) as image:
        image.seek(0)  # the first frame of a GIF
        if channels is None:
            channels = 1 if image.mode in ("1", "L", "LA", "I", "F") or \
                image.mode.startswith("I;16") else 3
        image = _to_mode(image, channels)
        array = np.asarray(image, dtype=np.uint8)
    return array.reshape(array.shape[0], array.shape[1], channels)


_FILE_KINDS = ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISCHR, "a character device"),
               (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def file_problem(path, info: os.stat_result | None = None) -> str | None:
    """Why `path` is not read as an image, without opening it: not a regular file (a named
    pipe would block the reader forever), a broken link, or not an image extension; None
    when it is a regular image file. `info` is its `os.stat` when already known."""
    if info is None:
        try:
            info = os.stat(path)
        except OSError as error:
            broken = os.path.islink(path)
            return "broken symbolic link" if broken else f"cannot stat ({error.strerror})"
    if not stat.S_ISREG(info.st_mode):
        kind = next((name for test, name in _FILE_KINDS if test(info.st_mode)), "not a file")
        return f"not a regular file ({kind}); not opened"
    if not is_image_file(path):
        return unsupported_format(path)
    return None


def _decode_rows(images_path, shape, tasks, size_hw, channels, keep_aspect):
    """Decodes (row, file) `tasks` straight into rows of the image file; returns
    [(row, reason)] of those that failed. Runs in a worker process, with one BLAS thread:
    the processes share the cores, and BLAS threads that wait on each other for one image's
    small products run many times slower on a busy machine."""
    from threadpoolctl import threadpool_limits

    images = np.memmap(images_path, np.uint8, "r+", shape=tuple(shape))
    failed = []
    with threadpool_limits(1, user_api="blas"):
        for row, path in tasks:
            try:
                images[row] = decode_image(path, size_hw, channels, keep_aspect)
            except Exception as exc:  # any decoding failure means "skip this file"
                failed.append((row, describe_error(exc)))
    images.flush()
    return failed


def _decode_all(images_path, shape, tasks, size_hw, channels, keep_aspect, workers, report):
    """`_decode_rows` over `tasks` in chunks, on `workers` processes when there are enough
    files to be worth starting them; returns {row: reason} of the failures."""
    chunks = [tasks[i:i + _DECODE_CHUNK] for i in range(0, len(tasks), _DECODE_CHUNK)]
    failed, done = {}, 0
    args = (images_path, shape)
    if workers > 1 and len(chunks) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        # fork: a spawned worker would import the command's whole module (Keras included).
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else None
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method)) as pool:
            futures = {pool.submit(_decode_rows, *args, chunk, size_hw, channels, keep_aspect):
                       len(chunk) for chunk in chunks}
            for future in as_completed(futures):
                failed.update(future.result())
                done += futures[future]
                report(done)
        return failed
    for chunk in chunks:
        failed.update(_decode_rows(*args, chunk, size_hw, channels, keep_aspect))
        done += len(chunk)
        report(done)
    return failed


class _Progress:
    """`folder:ROOT: decoded n/N images` on stderr, at most every few seconds."""

    def __init__(self, name: str, total: int, where: Path, enabled: bool):
        self.name, self.total, self.enabled = name, total, enabled
        self.start = self.last = time.monotonic()
        if enabled:
            print(f"{name}: decoding {total} image(s) into the cache {where} (once; later "
                  "commands read it from there)", file=sys.stderr, flush=True)

    def __call__(self, done: int) -> None:
        now = time.monotonic()
        if self.enabled and (now - self.last > _PROGRESS_SECONDS or done == self.total):
            self.last = now
            rate = done / max(now - self.start, 1e-9)
            print(f"{self.name}: decoded {done}/{self.total} images ({rate:.0f}/s)",
                  file=sys.stderr, flush=True)


def _cached_images(root: Path, names: list[str], sizes: np.ndarray, mtimes: np.ndarray,
                   size_hw, channels: int, keep_aspect: bool, workers: int, progress: bool):
    """(read-only memory map of the decodable candidates' images in order, {index in
    candidates: reason} of those that are not), through the cache entry of this folder at
    this size, channels and crop rule; the candidates are the image files `names` (relative
    to `root`) with their sizes and modification times (int64, ns). Only files added or
    changed since the entry was built are decoded; the rest are copied from it."""
    from mixem_tf.data.cache import CacheEntry, join_paths, split_paths

    entry = CacheEntry({"source": "folder", "root": str(root), "size": list(size_hw),
                        "channels": channels, "crop": "centre" if keep_aspect else "stretch"},
                       label=f"{root.name}-{size_hw[0]}x{size_hw[1]}x{channels}")
    joined = join_paths(names)

    def current(index):
        return (index is not None and np.array_equal(index["sizes"], sizes)
                and np.array_equal(index["mtimes"], mtimes)
                and np.array_equal(index["paths"], joined))

    def result(index):
        rows, reasons = index["rows"], split_paths(index["reasons"])
        failed = dict(zip(np.flatnonzero(rows < 0).tolist(), reasons))
        return entry.open_images(index), failed

    index = entry.read_index()
    if current(index):
        try:
            return result(index)
        except FileNotFoundError:  # rebuilt since the index was read: read it under the lock
            pass
    name = f"{FOLDER_PREFIX}{root}"
    with entry.locked(lambda: print(f"{name}: waiting for another process that is decoding "
                                    f"it into {entry.path}", file=sys.stderr, flush=True)):
        index = entry.read_index()
        if current(index):
            return result(index)
        entry.remove_stale(keep=index["header"]["images"] if index else None)
        old, old_images = {}, None
        if index is not None:
            old_images = entry.open_images(index)
            old_reasons = iter(split_paths(index["reasons"]))
            for key, size, mtime, row in zip(split_paths(index["paths"]), index["sizes"],
                                              index["mtimes"], index["rows"]):
                old[key] = (int(size), int(mtime), int(row),
                            next(old_reasons) if row < 0 else None)
        # Provisional rows: every candidate that is not a known failure; failures of the
        # new decodes are squeezed out afterwards.
        reuse, decode, known_failed, provisional = [], [], {}, {}
        for i, key in enumerate(names):
            kept = old.get(key)
            if kept is not None and kept[:2] == (int(sizes[i]), int(mtimes[i])):
                if kept[2] < 0:
                    known_failed[i] = kept[3]
                    continue
                reuse.append((len(provisional), kept[2]))
            else:
                decode.append((len(provisional), os.path.join(root, key)))
            provisional[i] = len(provisional)
        shape = (len(provisional), *size_hw, channels)
        images_path, images = entry.new_images(shape)
        try:
            for start in range(0, len(reuse), _COPY_ROWS):
                pairs = np.array(reuse[start:start + _COPY_ROWS])
                images[pairs[:, 0]] = old_images[pairs[:, 1]]
            del old_images
            bar = _Progress(name, len(decode), entry.path, progress and bool(decode))
            new_failed = _decode_all(images_path, shape, decode, size_hw, channels,
                                     keep_aspect, workers, bar)
            by_row = {row: i for i, row in provisional.items()}
            failed = {**known_failed, **{by_row[row]: why for row, why in new_failed.items()}}
            kept_rows = [row for i, row in provisional.items() if i not in failed]
            _squeeze(images, kept_rows)
            rows = np.full(len(names), -1, np.int64)
            rows[[i for i in provisional if i not in failed]] = np.arange(len(kept_rows))
            if images is not None:
                images.flush()
            del images
            final = (len(kept_rows), *size_hw, channels)
            entry.commit(images_path, final, {
                "paths": joined, "sizes": sizes, "mtimes": mtimes, "rows": rows,
                "reasons": join_paths([failed[i] for i in sorted(failed)])},
                {"source": name})
        except BaseException:
            images_path.unlink(missing_ok=True)
            raise
        return result(entry.read_index())


def _squeeze(images, kept_rows) -> None:
    """Moves rows `kept_rows` (ascending) to 0, 1, ... in place, in bounded chunks."""
    moves = [(src, dst) for dst, src in enumerate(kept_rows) if src != dst]
    for start in range(0, len(moves), _COPY_ROWS):
        pairs = np.array(moves[start:start + _COPY_ROWS])
        images[pairs[:, 1]] = images[pairs[:, 0]]


def _labels_from_subfolders(relative: list[str]):
    """(labels, class_names) when every image lies in a first-level sub-folder, else None."""
    if not relative or any(os.sep not in rel for rel in relative):
        return None
    tops = [rel[:rel.index(os.sep)] for rel in relative]
    class_names = tuple(sorted(set(tops)))
    index = {name: i for i, name in enumerate(class_names)}
    return np.array([index[top] for top in tops], dtype=np.int64), class_names


def load_folder(
    path,
    *,
    image_size=DEFAULT_FOLDER_IMAGE_SIZE,
    channels: int = 3,
    keep_aspect: bool = False,
    num_workers: int | None = None,
    progress: bool = True,
) -> FolderDataset:
    """All images under `path` as one `FolderDataset` (single split ``"all"``), its `scan`
    saying what was found, used and skipped. The images are a read-only memory map of the
    folder's entry in the decoded cache (`mixem_tf.data.cache`), built or brought up to date
    first.

    Args:
        path: the folder, searched recursively.
        image_size: int or (height, width) every image is resized to (default 96).
        channels: 3 (RGB, default) or 1 (grey).
        keep_aspect: centre-crop to the target aspect ratio before resizing, instead of
            stretching.
        num_workers: decoding processes (default: min(8, CPU count)).
        progress: print what is decoded into the cache, and how fast, on stderr.

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: `path` is a file; no image files under it, none of them decodable, or a
            bad `image_size` / `channels`.

    Example:
        >>> ds = load_folder("~/photos", image_size=64)   # or load_dataset("folder:~/photos")
        >>> print(ds.scan.summary())                     # found, used, skipped
    """
    from PIL import Image  # noqa: F401  (fail early, with the real ImportError, if missing)

    size_hw = parse_image_size(image_size)
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {channels!r}")
    root = Path(os.path.expanduser(str(path)))
    if not root.exists():
        raise FileNotFoundError(f"{FOLDER_PREFIX}{root}: no such folder")
    if not root.is_dir():
        raise ValueError(f"{FOLDER_PREFIX}{root} is a file, not a folder (folder:PATH needs a "
                         "folder of images)")
    root = root.resolve()

    files = relative_files(root)
    # The image files, their sizes and modification times: compact arrays, since a cache
    # hit is this loop (a stat per file) and its memory grows with the folder.
    names, sizes, mtimes, problems = [], array.array("q"), array.array("q"), {}
    prefix, is_regular = str(root) + os.sep, stat.S_ISREG
    for rel in files:
        path = prefix + rel
        try:
            info = os.stat(path)
        except OSError:
            info = None
        if info is not None and is_regular(info.st_mode) and \
                rel[rel.rfind("."):].lower() in IMAGE_EXTENSIONS:
            names.append(rel)
            sizes.append(info.st_size)
            mtimes.append(info.st_mtime_ns)
        else:
            problems[rel] = file_problem(path, info)
    if not names:
        found = f"{len(files)} other file(s)" if files else "no files at all"
        raise ValueError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) under {str(root)!r}: "
                         f"found {found}")

    workers = num_workers or min(_MAX_WORKERS, os.cpu_count() or 1)
    images, failed = _cached_images(root, names, np.frombuffer(sizes, np.int64),
                                    np.frombuffer(mtimes, np.int64), size_hw, channels,
                                    keep_aspect, workers, progress)
    problems.update({names[i]: why for i, why in failed.items()})
    skipped = tuple((root / rel, problems[rel]) for rel in files if rel in problems) \
        if problems else ()
    scan = FolderScan(root, len(files), skipped)
    if not len(images):
        raise ValueError(f"none of the {len(names)} image files under {str(root)!r} could "
                         f"be decoded: {scan.summary()}")
    if skipped:
        warnings.warn(scan.summary(), SkippedFilesWarning, stacklevel=2)
    kept = [rel for i, rel in enumerate(names) if i not in failed] if failed else names

    labelled = _labels_from_subfolders(kept)
    labels, class_names = labelled if labelled else (None, None)
    return FolderDataset(
        name=f"{FOLDER_PREFIX}{root}",
        images=images,
        labels=labels,
        num_classes=len(class_names) if class_names else None,
        class_names=class_names,
        split="all",
        scan=scan,
        paths=tuple(kept),
    )
