"""Dataset names → facts and sources: `DATASET_FACTS`, `dataset_info`, `load_dataset`.

`DATASET_FACTS` is the one place a dataset's native size, channels and recipe class are
written; recipes (`mixem_tf.recipes`), view pipelines (`mixem_tf.methods.augmentation`),
MiCE's table and the command-line help read them from here. Adding a dataset is one row there
plus its loader (a `TfdsSource` in `tfds_source.py`, or a branch of `_load_stored`).

| name | source | splits (images) | image | classes |
| --- | --- | --- | --- | --- |
| ``stl10`` | TFDS ``stl10`` | train 5k, test 8k, unlabeled 100k (no labels) | 96×96×3 | 10 |
| ``cifar10`` | TFDS ``cifar10`` | train 50k, test 10k | 32×32×3 | 10 |
| ``cifar100_20`` | TFDS ``cifar100``, 20 superclasses | train 50k, test 10k | 32×32×3 | 20 |
| ``mnist`` | TFDS ``mnist`` | train 60k, test 10k | 28×28×1 | 10 |
| ``fashion_mnist`` | IDX files, else TFDS | train 60k, test 10k | 28×28×1 | 10 |
| ``digits`` | scikit-learn | all 1797 | 8×8×1 | 10 |
| ``folder:PATH`` | Pillow | all | 96×96×3 by default | sub-folders |

Every name also accepts ``split="all"``: train + test concatenated (never STL-10's unlabeled
images). Single-split sources (``digits``, ``folder:``) have one split, ``"all"``; ``"train"``
(the default) returns it too, and ``"test"`` is an error (there are no held-out images). A
protocol on them trains and evaluates on the same images (`load_protocol`).

Fashion-MNIST is read from IDX files (`mixem_tf.data.idx`) whenever they exist, first in
`data_dir`, then in the Debian package's directory; only if neither holds them is TFDS used.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

from mixem_tf.data import idx
from mixem_tf.data.dataset import DatasetUnavailableError, ImageDataset, parse_image_size
from mixem_tf.data.digits import DIGITS_CLASS_NAMES
from mixem_tf.data.folder import DEFAULT_FOLDER_IMAGE_SIZE
from mixem_tf.data.tfds_source import TFDS_SOURCES

__all__ = [
    "DATASET_FACTS",
    "DATASET_KEYS",
    "DATASET_NAMES",
    "DatasetFacts",
    "DatasetInfo",
    "DatasetUnavailableError",
    "dataset_facts",
    "dataset_info",
    "dataset_key",
    "load_dataset",
    "load_splits",
]

_FOLDER_PREFIX = "folder:"
FOLDER_KEY = "folder"  # the facts and recipes of every folder:PATH


@dataclasses.dataclass(frozen=True)
class DatasetFacts:
    """What every part of mixem-tf needs to know about a dataset before loading it.

    Attributes:
        image_size: native (stored) height = width; a folder's default resize target.
        channels: 1 (grey) or 3 (RGB).
        recipe: the recipe class methods use: ``"paper"`` (the papers' settings),
            ``"small"`` (a 2-core CPU budget with a small ConvNet) or ``"folder"``.
        epochs: the small recipe's epoch budget on this dataset (None for the others).
    """

    image_size: int
    channels: int
    recipe: str
    epochs: int | None = None


DATASET_FACTS = {
    "stl10": DatasetFacts(96, 3, "paper"),
    "cifar10": DatasetFacts(32, 3, "paper"),
    "cifar100_20": DatasetFacts(32, 3, "paper"),
    "mnist": DatasetFacts(28, 1, "small", epochs=15),
    "fashion_mnist": DatasetFacts(28, 1, "small", epochs=15),
    "digits": DatasetFacts(8, 1, "small", epochs=60),
    FOLDER_KEY: DatasetFacts(DEFAULT_FOLDER_IMAGE_SIZE, 3, "folder"),
}  # fmt: skip
DATASET_KEYS = tuple(DATASET_FACTS)  # recipe keys: the names, and "folder" for folder:PATH
DATASET_NAMES = tuple(k for k in DATASET_KEYS if k != FOLDER_KEY) + (f"{_FOLDER_PREFIX}PATH",)


def dataset_key(name) -> str:
    """The key of `name` in `DATASET_FACTS` (``"folder"`` for ``folder:PATH``).

    Raises:
        ValueError: unknown name (the message lists the valid ones).
    """
    if isinstance(name, str) and name.startswith(_FOLDER_PREFIX):
        return FOLDER_KEY
    if not isinstance(name, str) or name not in DATASET_FACTS or name == FOLDER_KEY:
        raise _unknown_name(name)
    return name


def dataset_facts(name) -> DatasetFacts:
    """`DATASET_FACTS` of a dataset name (``folder:PATH`` included)."""
    return DATASET_FACTS[dataset_key(name)]


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a dataset name holds, known without loading it.

    Attributes:
        name: the name as given.
        facts: its `DatasetFacts` (native size, channels, recipe class).
        num_classes: ground-truth classes, or None when unknown before loading (folders).
        image_shape: (H, W, C) as stored; a folder's is the default resize target.
        channels: C.
        splits: split name -> number of images (None when unknown before loading).
        labeled_splits: the splits that have labels.
        class_names: one per class, or None.
        source: where the data comes from.
    """

    name: str
    num_classes: int | None
    image_shape: tuple[int, int, int]
    channels: int
    splits: Mapping[str, int | None]
    labeled_splits: tuple[str, ...]
    class_names: tuple[str, ...] | None
    source: str
    facts: DatasetFacts | None = None

    @property
    def single_split(self) -> bool:
        """True for sources with one split (``all``): digits, folders."""
        return tuple(self.splits) == ("all",)


def _unknown_name(name) -> ValueError:
    return ValueError(
        f"unknown dataset {name!r}; valid names: {', '.join(DATASET_NAMES)} "
        "(folder:PATH with the path of an image folder)"
    )


def _folder_path(name: str) -> str:
    path = name[len(_FOLDER_PREFIX) :]
    if not path.strip():
        raise ValueError("folder: needs a path, e.g. 'folder:/data/my_images'")
    return path


def dataset_info(name: str) -> DatasetInfo:
    """Classes, image shape, channels and splits of `name`, without loading any data.

    Raises:
        ValueError: unknown name (the message lists the valid ones).
    """
    facts = dataset_facts(name)
    size, channels = facts.image_size, facts.channels
    if name in TFDS_SOURCES:
        source = TFDS_SOURCES[name]
        origin = f"TFDS builder {source.builder!r}"
        if name == "fashion_mnist":
            origin = f"IDX files (default {idx.FASHION_MNIST_DIR}), else {origin}"
        labeled = tuple(s for s in source.splits if s not in source.unlabeled_splits)
        return DatasetInfo(
            name=name,
            num_classes=source.num_classes,
            image_shape=(size, size, channels),
            channels=channels,
            splits=dict(source.split_sizes),
            labeled_splits=labeled,
            class_names=source.class_names,
            source=origin,
            facts=facts,
        )
    if name == "digits":
        return DatasetInfo("digits", 10, (size, size, channels), channels, {"all": 1797},
                           ("all",), DIGITS_CLASS_NAMES, "scikit-learn load_digits",
                           facts)  # fmt: skip
    path = _folder_path(name)
    return DatasetInfo(name, None, (size, size, channels), channels, {"all": None}, ("all",),
                       None, f"image folder {path!r} (labels from sub-folders if every image "
                       "is in one)", facts)  # fmt: skip


def _check_split(info: DatasetInfo, split: str) -> str:
    valid = list(info.splits)
    if info.single_split and split == "test":
        raise ValueError(f"dataset {info.name!r} has one split, 'all', and no held-out test "
                         "images: ask for split='all'")
    if info.single_split:
        valid += ["train"]
    elif "all" not in valid:
        valid.append("all")
    if split not in valid:
        raise ValueError(f"dataset {info.name!r} has no split {split!r}; valid splits: {valid}")
    return "all" if info.single_split else split


def _load_fashion_mnist(splits, data_dir, download) -> list[ImageDataset]:
    searched = []
    for directory in (data_dir, idx.FASHION_MNIST_DIR):
        if directory is None:
            continue
        searched.append(str(directory))
        files = [idx.find_idx_split(directory, split) for split in splits]
        if all(files):
            return [idx.load_idx_dataset(*found, name="fashion_mnist", num_classes=10,
                                         class_names=idx.FASHION_MNIST_CLASS_NAMES,
                                         split=split)
                    for found, split in zip(files, splits)]
    prefixes = " and ".join(f"{'train' if s == 'train' else 't10k'}-images-idx3-ubyte, "
                            f"{'train' if s == 'train' else 't10k'}-labels-idx1-ubyte"
                            for s in splits)
    hint = (
        f"put the IDX files {prefixes} (.gz or "
        f"raw; from the Debian package dataset-fashion-mnist or "
        f"github.com/zalandoresearch/fashion-mnist) in data_dir or {idx.FASHION_MNIST_DIR}; "
        f"searched for them in: {', '.join(searched)}"
    )
    from mixem_tf.data.tfds_source import load_tfds_splits

    return load_tfds_splits("fashion_mnist", splits, data_dir=data_dir, download=download,
                            extra_hint=hint)


def _load_stored(name: str, splits, data_dir, download, image_size, channels):
    """Stored splits, before any resize/channel conversion (folders resize on decode); the
    splits of a TFDS source are consecutive rows of one cache entry."""
    if name == "digits":
        from mixem_tf.data.digits import load_digits

        return [load_digits()]
    if name.startswith(_FOLDER_PREFIX):
        from mixem_tf.data.folder import load_folder

        return [load_folder(
            _folder_path(name),
            image_size=DEFAULT_FOLDER_IMAGE_SIZE if image_size is None else image_size,
            channels=3 if channels is None else channels,
        )]
    if name == "fashion_mnist":
        return _load_fashion_mnist(splits, data_dir, download)
    from mixem_tf.data.tfds_source import load_tfds_splits

    return load_tfds_splits(name, splits, data_dir=data_dir, download=download)


def _converted(dataset: ImageDataset, image_size, channels) -> ImageDataset:
    # Convert to grey before resizing and to RGB after: the resize then handles fewer channels.
    if channels == 1:
        dataset = dataset.with_channels(1)
    if image_size is not None:
        dataset = dataset.resized(image_size)
    if channels == 3:
        dataset = dataset.with_channels(3)
    return dataset


def load_splits(name: str, splits, *, data_dir=None, image_size=None,
                channels: int | None = None, download: bool = False) -> list[ImageDataset]:
    """`load_dataset` of each of `splits` (not ``"all"``), loaded together: a TFDS source's
    splits come as consecutive rows of one memory map, so joining consecutive ones copies
    nothing. Single-split sources give their one dataset for every split asked."""
    info = dataset_info(name)
    stored = [_check_split(info, split) for split in splits]
    if "all" in stored and not info.single_split:
        raise ValueError("load_splits takes stored splits; use load_dataset for 'all'")
    if channels is not None and channels not in (1, 3):
        raise ValueError(f"channels must be 1, 3 or None, got {channels!r}")
    if image_size is not None:
        parse_image_size(image_size)  # fail before loading anything
    if data_dir is not None:
        data_dir = os.path.expanduser(str(data_dir))
    wanted = list(dict.fromkeys(stored))
    loaded = _load_stored(name, wanted, data_dir, download, image_size, channels)
    by_split = {split: _converted(ds, image_size, channels) for split, ds in zip(wanted, loaded)}
    return [by_split[split] for split in stored]


def load_dataset(
    name: str,
    split: str = "train",
    *,
    data_dir=None,
    image_size=None,
    channels: int | None = None,
    download: bool = False,
) -> ImageDataset:
    """Images (uint8 ``[N, H, W, C]``) and evaluation labels of one split of `name`.

    Args:
        name: one of `DATASET_NAMES` (``folder:PATH`` with a real path).
        split: ``train``, ``test``, ``all`` (train + test), STL-10 ``unlabeled``;
            single-split sources (digits, folders) have only ``all`` (``train`` returns it
            too; ``test`` is a ValueError).
        data_dir: where the data lives: a TFDS data directory, or for Fashion-MNIST a folder
            with the IDX files. None: TFDS's default; Fashion-MNIST also tries
            /usr/share/datasets/fashion-mnist.
        image_size: int or (h, w) to resize to (antialiased bilinear, batched); None keeps
            the stored size (folders: 96).
        channels: 1 or 3 to convert (luma / replicate); None keeps the stored channels
            (folders: RGB).
        download: allow TFDS to download missing data (off by default: offline, a TFDS
            download retries for minutes before failing).

    Raises:
        ValueError: unknown name or split (``test`` of a single-split source), bad
            image_size/channels.
        DatasetUnavailableError: the data is not here and cannot be fetched as asked.
        FileNotFoundError / NotADirectoryError: a ``folder:`` path that is not a folder.

    Example:
        >>> ds = load_dataset("fashion_mnist", "test", image_size=32)   # [10000, 32, 32, 1]
    """
    info = dataset_info(name)
    if _check_split(info, split) == "all" and not info.single_split:
        parts = load_splits(name, info.labeled_splits, data_dir=data_dir,
                            image_size=image_size, channels=channels, download=download)
        return ImageDataset.concatenate(*parts, name=name)
    return load_splits(name, [split], data_dir=data_dir, image_size=image_size,
                       channels=channels, download=download)[0]
