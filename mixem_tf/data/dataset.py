"""`ImageDataset`: uint8 images `[N, H, W, C]` with their labels kept apart.

Labels are for evaluation only: `ImageDataset.batches` yields images and nothing else, so no
training loop can read a label by accident. Every source of `mixem_tf.data` returns this type.

Also here: `parse_image_size` and `resize_images`, the one batched resize every source uses
(antialiased bilinear, the filter of Pillow's `Image.resize(..., BILINEAR)` and so of
torchvision's `Resize` on PIL images), and `DatasetUnavailableError`.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Iterator, Sequence

import numpy as np

from mixem_tf.data.cache import read_rows

__all__ = [
    "DatasetUnavailableError",
    "ImageDataset",
    "MAX_IMAGE_SIZE",
    "parse_image_size",
    "resize_images",
]

MAX_IMAGE_SIZE = 4096  # larger requested sizes are taken for a mistake
_RESIZE_CHUNK_BYTES = 256 * 2**20  # float32 working memory per resize chunk


class DatasetUnavailableError(RuntimeError):
    """A dataset's data is not on this machine and cannot be fetched as asked.

    The message names the dataset, where it was looked for, and how to provide it.
    """


@dataclasses.dataclass(eq=False)
class ImageDataset:
    """Images and (optional, evaluation-only) labels of one dataset or split.

    Attributes:
        name: dataset name as given to `load_dataset` (e.g. ``"cifar10"``).
        images: np.uint8 ``[N, H, W, C]``, C = 1 (grey) or 3 (RGB), C-contiguous.
        labels: np.int64 ``[N]`` or None (no ground truth, e.g. STL-10 ``unlabeled``).
        num_classes: number of ground-truth classes, or None when unknown.
        class_names: one name per class id (tuple of str), or None.
        split: the split(s) the images come from (e.g. ``"train+test"``), or None.

    Raises:
        ValueError / TypeError: on construction, for a wrong dtype, rank, channel count,
            label length, a label outside ``[0, num_classes)`` or an empty image array.

    Example:
        >>> ds = ImageDataset("toy", np.zeros((10, 8, 8, 1), np.uint8), np.arange(10) % 2, 2)
        >>> for batch in ds.batches(4, seed=epoch):   # two batches of 4, uint8 [4, 8, 8, 1]
        ...     ...
    """

    name: str
    images: np.ndarray
    labels: np.ndarray | None = None
    num_classes: int | None = None
    class_names: tuple[str, ...] | None = None
    split: str | None = None

    def __post_init__(self):
        images = self.images
        if not isinstance(images, np.ndarray):
            raise TypeError(f"{self.name}: images must be a numpy array, got {type(images)}")
        if images.dtype != np.uint8:
            raise TypeError(f"{self.name}: images must be uint8, got {images.dtype}")
        if images.ndim != 4 or images.shape[-1] not in (1, 3):
            raise ValueError(
                f"{self.name}: images must have shape [N, H, W, C] with C = 1 or 3, "
                f"got {images.shape}"
            )
        if images.shape[0] == 0:
            raise ValueError(f"{self.name}: an ImageDataset needs at least one image")
        self.images = np.ascontiguousarray(images)

        if self.labels is not None:
            labels = np.asarray(self.labels)
            if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
                raise ValueError(
                    f"{self.name}: labels must have shape [{images.shape[0]}], got {labels.shape}"
                )
            if not np.issubdtype(labels.dtype, np.integer):
                raise TypeError(f"{self.name}: labels must be integers, got {labels.dtype}")
            self.labels = labels.astype(np.int64, copy=False)

        if self.num_classes is not None:
            if isinstance(self.num_classes, bool) or int(self.num_classes) < 1:
                raise ValueError(f"{self.name}: num_classes must be >= 1, got {self.num_classes}")
            self.num_classes = int(self.num_classes)
            if self.labels is not None:
                low, high = int(self.labels.min()), int(self.labels.max())
                if low < 0 or high >= self.num_classes:
                    raise ValueError(
                        f"{self.name}: labels span [{low}, {high}], outside "
                        f"[0, {self.num_classes}) for num_classes={self.num_classes}"
                    )
        if self.class_names is not None:
            self.class_names = tuple(str(c) for c in self.class_names)
            if self.num_classes is not None and len(self.class_names) != self.num_classes:
                raise ValueError(
                    f"{self.name}: {len(self.class_names)} class names for "
                    f"num_classes={self.num_classes}"
                )

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __repr__(self) -> str:
        split = f", split={self.split!r}" if self.split else ""
        labels = "none" if self.labels is None else "int64"
        return (
            f"ImageDataset(name={self.name!r}{split}, n={len(self)}, "
            f"image_shape={self.image_shape}, labels={labels}, num_classes={self.num_classes})"
        )

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of one image."""
        return tuple(int(d) for d in self.images.shape[1:])

    @property
    def channels(self) -> int:
        return int(self.images.shape[-1])

    def _replace(self, **changes) -> ImageDataset:
        return dataclasses.replace(self, **changes)

    def subset(self, indices) -> ImageDataset:
        """The images (and labels) at `indices`: integer indices, a boolean mask or a slice."""
        if isinstance(indices, slice):
            index = indices
        else:
            index = np.asarray(indices)
            if index.dtype == bool:
                if index.shape != (len(self),):
                    raise ValueError(
                        f"boolean mask must have shape ({len(self)},), got {index.shape}"
                    )
            elif index.size == 0:
                index = index.astype(np.int64)
            elif not np.issubdtype(index.dtype, np.integer) or index.ndim != 1:
                raise TypeError(
                    f"indices must be a 1-D integer array, a boolean mask or a slice, "
                    f"got dtype {index.dtype} and shape {index.shape}"
                )
        images = self.images[index]
        labels = None if self.labels is None else self.labels[index]
        return self._replace(images=images, labels=labels)

    @classmethod
    def concatenate(cls, *datasets: ImageDataset, name: str | None = None) -> ImageDataset:
        """One dataset holding all images of `datasets`, in order.

        Labels are kept only when every part has them (else None). Image shapes, and
        num_classes/class_names where given, must agree. Parts that lie back to back in one
        buffer (consecutive splits of one cache entry) are joined as a view, not copied.
        """
        if len(datasets) == 1 and not isinstance(datasets[0], ImageDataset):
            datasets = tuple(datasets[0])  # a list or tuple passed as one argument
        if not datasets:
            raise ValueError("concatenate needs at least one ImageDataset")
        for ds in datasets:
            if not isinstance(ds, ImageDataset):
                raise TypeError(f"concatenate takes ImageDataset objects, got {type(ds)}")
        first = datasets[0]
        for ds in datasets[1:]:
            if ds.image_shape != first.image_shape:
                raise ValueError(
                    f"cannot concatenate datasets with different image shapes: "
                    f"{first.name!r} has {first.image_shape}, {ds.name!r} has {ds.image_shape}; "
                    "load them with the same image_size (and channels)"
                )
        class_counts = {ds.num_classes for ds in datasets if ds.num_classes is not None}
        if len(class_counts) > 1:
            raise ValueError(f"cannot concatenate datasets with num_classes {sorted(class_counts)}")
        names = {ds.class_names for ds in datasets if ds.class_names is not None}
        if len(names) > 1:
            raise ValueError("cannot concatenate datasets whose class_names differ")

        images = _adjacent_view([ds.images for ds in datasets])
        if images is None:
            images = np.concatenate([ds.images for ds in datasets], axis=0)
        labelled = all(ds.labels is not None for ds in datasets)
        labels = np.concatenate([ds.labels for ds in datasets]) if labelled else None
        if name is None:
            name = "+".join(dict.fromkeys(ds.name for ds in datasets))
        splits = [ds.split for ds in datasets]
        split = "+".join(splits) if all(splits) else None
        return cls(
            name=name,
            images=images,
            labels=labels,
            num_classes=class_counts.pop() if class_counts else None,
            class_names=names.pop() if names else None,
            split=split,
        )

    def steps(self, batch_size: int, drop_remainder: bool = True) -> int:
        """How many batches `batches(batch_size, drop_remainder=...)` yields per epoch."""
        batch_size = self._check_batch_size(batch_size, drop_remainder)
        full, rest = divmod(len(self), batch_size)
        return full if drop_remainder or rest == 0 else full + 1

    def _check_batch_size(self, batch_size, drop_remainder) -> int:
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral):
            raise TypeError(f"batch_size must be an int, got {batch_size!r}")
        batch_size = int(batch_size)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if drop_remainder and batch_size > len(self):
            raise ValueError(
                f"batch_size {batch_size} is larger than the {len(self)} images of "
                f"{self.name!r}: with drop_remainder=True no batch would be produced; "
                "use a smaller batch_size or drop_remainder=False"
            )
        return batch_size

    def batches(
        self,
        batch_size: int,
        shuffle: bool = True,
        seed: int | None = 0,
        drop_remainder: bool = True,
    ) -> Iterator[np.ndarray]:
        """One epoch of uint8 image batches ``[batch_size, H, W, C]``; never labels.

        With `shuffle`, one permutation from ``np.random.default_rng(seed)`` orders the epoch
        and each batch is gathered as a copy (`read_rows`); pass a different seed per epoch
        (e.g. ``seed=base_seed + epoch``). Without `shuffle`, batches are read-only views in
        storage order. `drop_remainder` drops the last, short batch (fixed-B losses need it,
        docs/METHODS.md §5.12).

        Raises:
            ValueError: batch_size < 1, or batch_size > len(self) with drop_remainder.
        """
        batch_size = self._check_batch_size(batch_size, drop_remainder)
        n = len(self)
        stop = n - n % batch_size if drop_remainder else n
        images = self.images
        if shuffle:
            order = np.random.default_rng(seed).permutation(n)
            return (read_rows(images, order[i : i + batch_size])
                    for i in range(0, stop, batch_size))
        view = images.view()
        view.flags.writeable = False
        return (view[i : i + batch_size] for i in range(0, stop, batch_size))

    def resized(self, image_size) -> ImageDataset:
        """A copy with images resized to `image_size` (int or (h, w)); self if unchanged."""
        height, width = parse_image_size(image_size)
        if (height, width) == self.image_shape[:2]:
            return self
        return self._replace(images=resize_images(self.images, (height, width)))

    def with_channels(self, channels: int) -> ImageDataset:
        """A copy with 1 (luma, ITU-R 601: 0.299 R + 0.587 G + 0.114 B) or 3 channels."""
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels!r}")
        if channels == self.channels:
            return self
        if channels == 3:
            images = np.repeat(self.images, 3, axis=-1)
        else:
            chunks = []
            weights = np.array([0.299, 0.587, 0.114], np.float32)
            for start in range(0, len(self), 8192):
                luma = self.images[start : start + 8192].astype(np.float32) @ weights
                chunks.append(np.clip(np.rint(luma), 0, 255).astype(np.uint8)[..., None])
            images = np.concatenate(chunks)
        return self._replace(images=images)


def _root_array(array: np.ndarray) -> np.ndarray:
    """The outermost numpy array `array` is a view of (itself if it owns its memory)."""
    while isinstance(array.base, np.ndarray):
        array = array.base
    return array


def _adjacent_view(arrays) -> np.ndarray | None:
    """One array over `arrays` when they are C-contiguous views of one buffer that follow
    each other in it (no copy), else None."""
    root = _root_array(arrays[0])
    if not root.flags.c_contiguous or root.dtype != arrays[0].dtype:
        return None
    start = arrays[0].__array_interface__["data"][0]
    end = start
    for array in arrays:
        if (_root_array(array) is not root or not array.flags.c_contiguous
                or array.__array_interface__["data"][0] != end):
            return None
        end += array.nbytes
    offset = (start - root.__array_interface__["data"][0]) // root.itemsize
    flat = root.reshape(-1)[offset:offset + (end - start) // root.itemsize]
    return flat.reshape(-1, *arrays[0].shape[1:])


def parse_image_size(image_size) -> tuple[int, int]:
    """`image_size` (int, or (height, width)) as a validated (height, width) tuple.

    Raises:
        ValueError / TypeError: not an int or a pair of ints, or outside [1, MAX_IMAGE_SIZE].
    """
    if isinstance(image_size, (str, bytes)) or image_size is None:
        raise TypeError(f"image_size must be an int or (height, width), got {image_size!r}")
    if isinstance(image_size, Sequence) or isinstance(image_size, np.ndarray):
        values = list(image_size)
        if len(values) != 2:
            raise ValueError(f"image_size must be an int or (height, width), got {image_size!r}")
    else:
        values = [image_size, image_size]
    size = []
    for value in values:
        if isinstance(value, (bool, np.bool_)):
            raise TypeError(f"image_size must be an int or (height, width), got {image_size!r}")
        if not isinstance(value, numbers.Integral):
            if isinstance(value, numbers.Real) and float(value).is_integer():
                value = int(value)
            else:
                raise TypeError(
                    f"image_size must be an int or (height, width) of ints, got {image_size!r}"
                )
        if not 1 <= int(value) <= MAX_IMAGE_SIZE:
            raise ValueError(
                f"image_size must be between 1 and {MAX_IMAGE_SIZE} pixels, got {image_size!r}"
            )
        size.append(int(value))
    return size[0], size[1]


def _bilinear_weights(in_size: int, out_size: int) -> np.ndarray:
    """[out, in] weights of Pillow's BILINEAR resampling (a triangle filter widened by the
    down-scaling factor, so down-sizing is antialiased), rows normalised to 1."""
    scale = in_size / out_size
    support = max(scale, 1.0)
    centres = (np.arange(out_size) + 0.5) * scale
    offsets = (np.arange(in_size)[None, :] + 0.5 - centres[:, None]) / support
    weights = np.clip(1.0 - np.abs(offsets), 0.0, None)
    return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)


def resize_images(images: np.ndarray, image_size) -> np.ndarray:
    """Resize uint8 ``[N, H, W, C]`` images to `image_size`, batched (no per-image Python).

    Separable antialiased bilinear: the same filter as Pillow's ``BILINEAR`` (and so as
    torchvision's ``Resize`` on PIL images); values agree with Pillow to within 1-2 levels
    (Pillow rounds between its two passes). Done in chunks to bound memory.
    """
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"expected uint8 [N, H, W, C] images, got {images.dtype} {images.shape}")
    height, width = parse_image_size(image_size)
    n, in_h, in_w, channels = images.shape
    if (in_h, in_w) == (height, width):
        return images.copy()
    rows = _bilinear_weights(in_h, height)  # [h, H]
    cols = _bilinear_weights(in_w, width)  # [w, W]
    out = np.empty((n, height, width, channels), np.uint8)
    per_image = 4 * (in_h * in_w + height * in_w + height * width) * channels
    chunk = max(1, _RESIZE_CHUNK_BYTES // per_image)
    for start in range(0, n, chunk):
        part = images[start : start + chunk]
        m = len(part)
        # Two plain 2-D GEMMs on contiguous operands (BLAS), rows first, as the exported graph.
        tall = np.ascontiguousarray(part.transpose(1, 0, 2, 3), np.float32).reshape(in_h, -1)
        tall = (rows @ tall).reshape(height, m, in_w, channels)          # [h, m, W, C]
        wide = np.ascontiguousarray(tall.transpose(2, 0, 1, 3)).reshape(in_w, -1)
        wide = (cols @ wide).reshape(width, height, m, channels)         # [w, h, m, C]
        np.clip(np.rint(wide, out=wide), 0, 255, out=wide)
        out[start : start + chunk] = wide.transpose(2, 1, 0, 3)
    return out
