"""IDX files (the MNIST / Fashion-MNIST format), read with numpy; no network, no TensorFlow.

Fashion-MNIST comes from the Debian package ``dataset-fashion-mnist``, which installs the four
gzipped IDX files in `FASHION_MNIST_DIR`. TFDS cannot use them (Debian recompressed the files,
so TFDS's checksums reject them), hence this reader.

IDX layout (big-endian): two zero bytes, a type code (0x08 uint8, 0x09 int8, 0x0B int16,
0x0C int32, 0x0D float32, 0x0E float64), the number of dimensions, one uint32 per dimension,
then the values in C order. Files may be gzipped (detected from the content, not the name).
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

from mixem_tf.data.dataset import ImageDataset

__all__ = [
    "FASHION_MNIST_CLASS_NAMES",
    "FASHION_MNIST_DIR",
    "IdxFormatError",
    "find_idx_split",
    "load_idx_dataset",
    "read_idx",
]

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASS_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
_SPLIT_PREFIX = {"train": "train", "test": "t10k"}
_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


class IdxFormatError(ValueError):
    """A file is not a valid IDX file (bad magic number, truncated, wrong dimensions)."""


def _read_bytes(path: Path) -> bytearray:
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] != _GZIP_MAGIC:
        return bytearray(raw)
    try:
        return bytearray(gzip.decompress(raw))
    except (OSError, EOFError, zlib.error) as exc:
        raise IdxFormatError(f"{path}: corrupt gzip stream ({exc})") from None


def read_idx(path) -> np.ndarray:
    """The array stored in the IDX file `path` (raw or gzipped), writable, native byte order.

    Raises:
        FileNotFoundError: `path` does not exist.
        IdxFormatError: bad magic number, unknown type code, or a size that does not match
            the dimensions in the header (truncated or padded file).
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise IdxFormatError(f"{path}: {len(data)} bytes, too short for an IDX header")
    zero0, zero1, code, ndim = data[:4]
    if zero0 or zero1 or code not in _DTYPES or ndim < 1:
        raise IdxFormatError(
            f"{path}: bad IDX magic number 0x{bytes(data[:4]).hex()} (expected 0x0000TTDD: "
            "two zero bytes, a type code 08/09/0B/0C/0D/0E and the number of dimensions)"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IdxFormatError(f"{path}: truncated header ({len(data)} of {header} bytes)")
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    dtype = _DTYPES[code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        raise IdxFormatError(
            f"{path}: header says dims {dims} of {dtype.name} ({expected} bytes of data) but "
            f"the file holds {len(data) - header} bytes after the header (truncated or corrupt)"
        )
    array = np.frombuffer(data, dtype, offset=header).reshape(dims)
    return array if dtype.isnative else array.astype(dtype.newbyteorder("="))


def _idx_file(directory: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (directory / name).is_file():
            return directory / name
    return None


def find_idx_split(directory, split: str) -> tuple[Path, Path] | None:
    """(images, labels) IDX paths of `split` ("train" or "test") in `directory`, or None.

    Looks for ``{train,t10k}-{images-idx3,labels-idx1}-ubyte`` with or without ``.gz``.
    """
    if directory is None:
        return None
    directory = Path(os.path.expanduser(str(directory)))
    prefix = _SPLIT_PREFIX[split]
    images = _idx_file(directory, f"{prefix}-images-idx3-ubyte")
    labels = _idx_file(directory, f"{prefix}-labels-idx1-ubyte")
    return (images, labels) if images and labels else None


def load_idx_dataset(
    images_path,
    labels_path,
    *,
    name: str,
    num_classes: int,
    class_names=None,
    split: str | None = None,
) -> ImageDataset:
    """An `ImageDataset` from an IDX image file ``[N, H, W]`` uint8 and label file ``[N]``.

    Raises:
        IdxFormatError: invalid files, wrong ranks/dtypes, image/label counts that differ,
            labels outside ``[0, num_classes)``.
    """
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise IdxFormatError(
            f"{images_path}: expected uint8 images [N, H, W], got {images.dtype} {images.shape}"
        )
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise IdxFormatError(
            f"{labels_path}: expected integer labels [N], got {labels.dtype} {labels.shape}"
        )
    if labels.shape[0] != images.shape[0]:
        raise IdxFormatError(
            f"{images_path} holds {images.shape[0]} images but {labels_path} holds "
            f"{labels.shape[0]} labels"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise IdxFormatError(
            f"{labels_path}: labels span [{labels.min()}, {labels.max()}], outside "
            f"[0, {num_classes})"
        )
    return ImageDataset(
        name=name,
        images=images[..., None],
        labels=labels.astype(np.int64),
        num_classes=num_classes,
        class_names=class_names,
        split=split,
    )
