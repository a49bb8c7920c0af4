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
  composited; no EXIF rotation), then resized to `image_size` with Pillow's antialiased
  BILINEAR filter, stretching to the target aspect ratio (``Resize((h, w))``) unless
  ``keep_aspect=True``, which centre-crops to the target aspect ratio first.
  JPEGs at least twice the target size are decoded at reduced scale (``Image.draft``) first.
- Labels: when every decoded image lies inside a first-level sub-folder, the sub-folder names,
  sorted, become the classes (``class_names``) and their index the label, like ImageFolder.
  Otherwise labels are None (a plain unlabelled collection).
- Files that cannot be decoded and files without an image extension are skipped. The dataset
  (a `FolderDataset`) carries a `FolderScan`: how many files were found, used and skipped,
  and every skipped file with its reason (`FolderScan.write_skipped` writes them as CSV). One
  short `SkippedFilesWarning` gives the counts and the first few.
- A path that is missing is a FileNotFoundError; a file, not a folder, a ValueError (both one
  line at the command line).
"""

from __future__ import annotations

import csv
import dataclasses
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from mixem_tf.data.dataset import ImageDataset, parse_image_size

__all__ = ["DEFAULT_FOLDER_IMAGE_SIZE", "FOLDER_PREFIX", "FolderDataset", "FolderScan",
           "IMAGE_EXTENSIONS", "SkippedFilesWarning", "absolute_folder_name", "describe_error",
           "is_image_file", "list_files", "load_folder", "read_image", "unsupported_format"]

# Formats Pillow reads without plug-ins; training and trainers.predict accept exactly these.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
DEFAULT_FOLDER_IMAGE_SIZE = 96  # STL-10's size; what MiCE uses for its ImageFolder datasets
FOLDER_PREFIX = "folder:"
_SHOWN_PATHS = 3  # how many skipped files the warning names
_REASON_CHARS = 80  # longest reason the warning shows (the CSV has the whole one)


class SkippedFilesWarning(UserWarning):
    """`load_folder` skipped files; the dataset's `scan` lists every one with its reason."""


def is_image_file(path) -> bool:
    """True when `path` has one of the supported image extensions (any case)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


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


def list_files(root: Path) -> list[Path]:
    """All non-hidden files under `root`, following links but never a directory twice."""
    seen = set()
    found = []
    for directory, subdirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(directory)
        if real in seen:
            subdirs[:] = []
            continue
        seen.add(real)
        subdirs[:] = [d for d in subdirs if not d.startswith(".")]
        found.extend(Path(directory, f) for f in files if not f.startswith("."))
    return sorted(found, key=lambda p: p.relative_to(root).parts)


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


def _decode(path: Path, size_hw: tuple[int, int], channels: int, keep_aspect: bool):
    """One image as uint8 [h, w, C]."""
    from PIL import Image

    height, width = size_hw
    with Image.open(path) as image:
        image.seek(0)  # the first frame of a GIF
        if image.format == "JPEG" and image.width >= 2 * width and image.height >= 2 * height:
            image.draft(None, (width, height))  # DCT-domain down-scaling, >= the target size
        image = _to_mode(image, channels)
        box = None
        if keep_aspect:
            box = _centre_crop_box(image.width, image.height, width, height)
        if image.size != (width, height) or box is not None:
            image = image.resize((width, height), Image.Resampling.BILINEAR, box=box)
        array = np.asarray(image, dtype=np.uint8)
    return array.reshape(height, width, channels)


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


def _labels_from_subfolders(relative: list[tuple[str, ...]]):
    """(labels, class_names) when every image lies in a first-level sub-folder, else None."""
    if not relative or any(len(parts) < 2 for parts in relative):
        return None
    class_names = tuple(sorted({parts[0] for parts in relative}))
    index = {name: i for i, name in enumerate(class_names)}
    labels = np.array([index[parts[0]] for parts in relative], dtype=np.int64)
    return labels, class_names


def load_folder(
    path,
    *,
    image_size=DEFAULT_FOLDER_IMAGE_SIZE,
    channels: int = 3,
    keep_aspect: bool = False,
    num_workers: int | None = None,
) -> FolderDataset:
    """All images under `path` as one `FolderDataset` (single split ``"all"``), its `scan`
    saying what was found, used and skipped.

    Args:
        path: the folder, searched recursively.
        image_size: int or (height, width) every image is resized to (default 96).
        channels: 3 (RGB, default) or 1 (grey).
        keep_aspect: centre-crop to the target aspect ratio before resizing, instead of
            stretching.
        num_workers: decoding threads (default: min(8, CPU count)).

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

    files = list_files(root)
    candidates = [p for p in files if is_image_file(p)]
    if not candidates:
        found = f"{len(files)} other file(s)" if files else "no files at all"
        raise ValueError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) under {str(root)!r}: "
                         f"found {found}")

    height, width = size_hw
    images = np.empty((len(candidates), height, width, channels), np.uint8)
    errors: list[str | None] = [None] * len(candidates)

    def work(i: int) -> None:
        try:
            images[i] = _decode(candidates[i], size_hw, channels, keep_aspect)
        except Exception as exc:  # any decoding failure means "skip this file"
            errors[i] = describe_error(exc)

    workers = num_workers or min(8, os.cpu_count() or 1)
    if workers > 1 and len(candidates) > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(work, range(len(candidates))))
    else:
        for i in range(len(candidates)):
            work(i)

    failed = {p: why for p, why in zip(candidates, errors) if why is not None}
    skipped = tuple((p, failed.get(p) or unsupported_format(p)) for p in files
                    if p in failed or not is_image_file(p))
    scan = FolderScan(root, len(files), skipped)
    ok = np.array([e is None for e in errors])
    if not ok.any():
        raise ValueError(f"none of the {len(candidates)} image files under {str(root)!r} could "
                         f"be decoded: {scan.summary()}")
    if skipped:
        warnings.warn(scan.summary(), SkippedFilesWarning, stacklevel=2)
    if not ok.all():
        images = images[ok]
    kept = [p for p, good in zip(candidates, ok) if good]

    labelled = _labels_from_subfolders([p.relative_to(root).parts for p in kept])
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
