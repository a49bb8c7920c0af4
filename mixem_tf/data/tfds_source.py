"""STL-10, CIFAR-10, CIFAR-100-20, MNIST and Fashion-MNIST through TensorFlow Datasets.

TensorFlow and TFDS are imported inside `load_tfds_splits` only. The first load writes the
splits asked for, batch by batch, into one entry of the decoded cache (`mixem_tf.data.cache`);
every later one maps it: the images are never all in memory at once.

Downloading is off by default (``download=False``): the data must already be prepared in
`data_dir` (or TFDS's default, ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``). On a machine
without network, a TFDS download does not fail fast: it retries for minutes. Pass
``download=True`` to let TFDS fetch and prepare the data. Missing data raises
`DatasetUnavailableError` with the builder, the directory searched and how to provide it.

CIFAR-100-20 (docs/METHODS.md §2.3, §5.2): CIFAR-100 images labelled with the 20 superclasses.
The labels are ``CIFAR100_TO_20[fine_label]``, the map of MiCE's ``dataset.py`` and MIX'EM's
``linear.py`` (identical; it is CIFAR-100's official superclass assignment). TFDS's own
``coarse_label`` comes from the same official assignment; `load_tfds` checks that the two
agree on every image and raises if they do not.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Mapping

import numpy as np

from mixem_tf.data.dataset import DatasetUnavailableError, ImageDataset

__all__ = [
    "CIFAR100_COARSE_NAMES",
    "CIFAR100_FINE_NAMES",
    "CIFAR100_TO_20",
    "CIFAR10_CLASS_NAMES",
    "STL10_CLASS_NAMES",
    "TFDS_SOURCES",
    "TfdsSource",
    "load_tfds",
    "load_tfds_splits",
]

STL10_CLASS_NAMES = (
    "airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck",
)  # fmt: skip
CIFAR10_CLASS_NAMES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
# CIFAR-100 fine classes in label order (alphabetical, as in the dataset's `meta` file).
CIFAR100_FINE_NAMES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle",
    "bottle", "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle",
    "caterpillar", "cattle", "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch",
    "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish", "forest", "fox",
    "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom",
    "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road",
    "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake",
    "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank",
    "telephone", "television", "tiger", "tractor", "train", "trout", "tulip", "turtle",
    "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
)  # fmt: skip
# The 20 superclasses in label order.
CIFAR100_COARSE_NAMES = (
    "aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables",
    "household_electrical_devices", "household_furniture", "insects", "large_carnivores",
    "large_man-made_outdoor_things", "large_natural_outdoor_scenes",
    "large_omnivores_and_herbivores", "medium_mammals", "non-insect_invertebrates", "people",
    "reptiles", "small_mammals", "trees", "vehicles_1", "vehicles_2",
)  # fmt: skip
# Fine label -> superclass (MiCE dataset.py `_cifar100_to_cifar20`; MIX'EM linear.py).
CIFAR100_TO_20 = np.array([
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11,
    6, 11, 5, 10, 7, 6, 13, 15, 3, 15, 0, 11, 1, 10, 12, 14, 16, 9, 11, 5,
    5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
    10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13,
    16, 19, 2, 4, 6, 19, 5, 5, 8, 19, 18, 1, 2, 15, 6, 0, 17, 8, 14, 13,
], dtype=np.int64)  # fmt: skip
CIFAR100_TO_20.flags.writeable = False

_CONVERT_BATCH = 4096  # examples per tf.data batch when converting to numpy


@dataclasses.dataclass(frozen=True)
class TfdsSource:
    """How one of our dataset names maps onto a TFDS builder.

    Attributes:
        name: our name (``"cifar100_20"``).
        builder: the TFDS builder (``"cifar100"``).
        splits: our split name -> TFDS split name.
        split_sizes: our split name -> number of images.
        unlabeled_splits: our splits without ground truth (labels None).
        class_names: one per class.
        coarse_labels: use CIFAR-100's 20 superclasses instead of the builder's ``label``.
    """

    name: str
    builder: str
    splits: Mapping[str, str]
    split_sizes: Mapping[str, int]
    class_names: tuple[str, ...]
    unlabeled_splits: tuple[str, ...] = ()
    coarse_labels: bool = False

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C), from the dataset's facts (`registry.DATASET_FACTS`)."""
        from mixem_tf.data.registry import DATASET_FACTS

        facts = DATASET_FACTS[self.name]
        return facts.image_size, facts.image_size, facts.channels


_TRAIN_TEST = {"train": "train", "test": "test"}
TFDS_SOURCES = {
    "stl10": TfdsSource(
        "stl10", "stl10", {**_TRAIN_TEST, "unlabeled": "unlabelled"},
        {"train": 5000, "test": 8000, "unlabeled": 100000}, STL10_CLASS_NAMES,
        unlabeled_splits=("unlabeled",),
    ),
    "cifar10": TfdsSource(
        "cifar10", "cifar10", _TRAIN_TEST, {"train": 50000, "test": 10000}, CIFAR10_CLASS_NAMES,
    ),
    "cifar100_20": TfdsSource(
        "cifar100_20", "cifar100", _TRAIN_TEST, {"train": 50000, "test": 10000},
        CIFAR100_COARSE_NAMES, coarse_labels=True,
    ),
    "mnist": TfdsSource(
        "mnist", "mnist", _TRAIN_TEST, {"train": 60000, "test": 10000},
        tuple(str(d) for d in range(10)),
    ),
    "fashion_mnist": TfdsSource(
        "fashion_mnist", "fashion_mnist", _TRAIN_TEST, {"train": 60000, "test": 10000},
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    ),
}  # fmt: skip


def _how_to_provide(source: TfdsSource, data_dir, extra_hint: str | None) -> str:
    target = data_dir if data_dir is not None else "DIR"
    lines = [
        "To provide it, either:",
        f"  - on a machine with internet access run `tfds build {source.builder} "
        f"--data_dir {target}` (or tfds.load({source.builder!r}, data_dir={str(target)!r})), "
        "copy that directory here and pass it as data_dir (command line: --data-dir); "
        "without data_dir TFDS looks in $TFDS_DATA_DIR or ~/tensorflow_datasets;",
        "  - or, where this machine has internet access, pass download=True and TFDS "
        "downloads and prepares the data itself"
        + (";" if extra_hint else "."),
    ]
    if extra_hint:
        lines.append(f"  - or {extra_hint}.")
    return "\n".join(lines)


def _import_tfds(source: TfdsSource, split: str, extra_hint):
    try:
        import tensorflow_datasets as tfds
    except ImportError as exc:
        hint = f"\nAlternatively {extra_hint}" if extra_hint else ""
        raise DatasetUnavailableError(
            f"dataset {source.name!r} (split {split!r}) is read through TensorFlow Datasets "
            f"(builder {source.builder!r}), which is not installed here ({exc}). Install it "
            "with `pip install -r requirements.txt` (TensorFlow + tensorflow-datasets)."
            + hint
        ) from None
    return tfds


def load_tfds(
    name: str,
    split: str,
    *,
    data_dir=None,
    download: bool = False,
    extra_hint: str | None = None,
) -> ImageDataset:
    """Split `split` of `name` (a key of `TFDS_SOURCES`) as an `ImageDataset` whose images
    are a read-only memory map of the decoded cache (see `load_tfds_splits`).

    Args:
        name: ``stl10``, ``cifar10``, ``cifar100_20``, ``mnist`` or ``fashion_mnist``.
        split: one of the source's split names (``train``, ``test``, STL-10 ``unlabeled``).
        data_dir: TFDS data directory; None for TFDS's default.
        download: let TFDS download and prepare missing data (needs network).
        extra_hint: one more way to provide the data, added to the error message.

    Raises:
        DatasetUnavailableError: TFDS is not installed, the data is not prepared and
            `download` is False, or the download failed.
        ValueError: CIFAR-100 fine and coarse labels disagree with `CIFAR100_TO_20`.
    """
    return load_tfds_splits(name, (split,), data_dir=data_dir, download=download,
                            extra_hint=extra_hint)[0]


def load_tfds_splits(name: str, splits, *, data_dir=None, download: bool = False,
                     extra_hint: str | None = None) -> list[ImageDataset]:
    """Splits `splits` of `name`, in that order, as `ImageDataset`s whose images are
    consecutive rows of one memory map: the cache entry of these splits
    (`mixem_tf.data.cache`), written batch by batch from TFDS the first time. Joining
    consecutive splits (`ImageDataset.concatenate`) then copies nothing.

    Raises: as `load_tfds`.
    """
    from mixem_tf.data.cache import CacheEntry

    source = TFDS_SOURCES[name]
    splits = tuple(splits)
    for split in splits:
        if split not in source.splits:
            raise ValueError(f"{name!r} has splits {sorted(source.splits)}, not {split!r}")
    tfds = _import_tfds(source, "+".join(splits), extra_hint)
    data_dir = None if data_dir is None else str(data_dir)
    builder = tfds.builder(source.builder, data_dir=data_dir)
    where = f"data_dir '{builder.data_dir_root}' (looked for '{builder.data_dir}'" + (
        ")" if data_dir is not None else "; TFDS's default, as no data_dir was given)"
    )
    if download:
        try:
            builder.download_and_prepare()
        except Exception as exc:  # network errors come in many types; report, don't dump
            raise DatasetUnavailableError(
                f"dataset {name!r}: TFDS could not download and prepare builder "
                f"{source.builder!r} into {where}: {type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}\n"
                + _how_to_provide(source, data_dir, extra_hint)
            ) from None
    entry = CacheEntry({"source": "tfds", "builder": source.builder,
                        "version": str(builder.version), "data_dir": str(builder.data_dir),
                        "prepared": _fingerprint(builder.data_dir), "splits": list(splits),
                        "coarse_labels": source.coarse_labels},
                       label=f"{name}-{'+'.join(splits)}")
    index = entry.read_index()
    try:
        images = None if index is None else entry.open_images(index)
    except FileNotFoundError:  # rebuilt since the index was read: read it under the lock
        index = None
    if index is None:
        with entry.locked(lambda: print(f"{name}: waiting for another process that is "
                                        f"writing it into {entry.path}", file=sys.stderr)):
            index = entry.read_index()
            if index is None:
                _write_entry(entry, tfds, builder, source, splits, where, download,
                             data_dir, extra_hint)
                index = entry.read_index()
            images = entry.open_images(index)
    starts = index["starts"].tolist()
    parts = []
    for split, start, stop in zip(splits, starts, starts[1:]):
        labels = None if split in source.unlabeled_splits else index["labels"][start:stop]
        parts.append(ImageDataset(name=name, images=images[start:stop], labels=labels,
                                  num_classes=source.num_classes,
                                  class_names=source.class_names, split=split))
    return parts


def _fingerprint(directory) -> list:
    """(name, size, mtime) of the prepared files: preparing the data again renews the entry."""
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except OSError:
        return []
    return [(e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in entries if e.is_file()]


def _write_entry(entry, tfds, builder, source: TfdsSource, splits, where, download,
                 data_dir, extra_hint) -> None:
    """Streams `splits` from TFDS into a new image file of `entry`, batch by batch, and
    commits it with the labels (-1 for unlabeled splits) and each split's first row."""
    images_path, _ = entry.new_images((0,))
    labels, starts, count = [], [0], 0
    print(f"{source.name}: writing {'+'.join(splits)} from TFDS into the decoded cache "
          f"{entry.path} (once; later commands map it)", file=sys.stderr, flush=True)
    try:
        with open(images_path, "ab") as handle:
            for split in splits:
                try:
                    tf_ds = builder.as_dataset(split=source.splits[split], shuffle_files=False)
                except AssertionError:  # TFDS's way of saying "no prepared data here"
                    state = "on but left nothing" if download else "off (download=False)"
                    raise DatasetUnavailableError(
                        f"dataset {source.name!r} (split {split!r}) is not available: TFDS "
                        f"builder {source.builder!r} (version {builder.version}) has no "
                        f"prepared data in {where}, and downloading is {state}.\n"
                        + _how_to_provide(source, data_dir, extra_hint)
                    ) from None
                labelled = split not in source.unlabeled_splits
                for batch_images, batch_labels in _batches(tfds, tf_ds, source, split):
                    handle.write(np.ascontiguousarray(batch_images, np.uint8).tobytes())
                    count += len(batch_images)
                    labels.append(batch_labels if labelled
                                  else np.full(len(batch_images), -1, np.int64))
                if count == starts[-1]:
                    raise DatasetUnavailableError(f"dataset {source.name!r} (split {split!r}): "
                                                  f"TFDS gave no examples from {where}")
                starts.append(count)
        entry.commit(images_path, (count, *source.image_shape), {
            "labels": np.concatenate(labels), "starts": np.array(starts, np.int64)},
            {"source": source.name, "splits": list(splits)})
    except BaseException:
        images_path.unlink(missing_ok=True)
        raise


def _batches(tfds, tf_ds, source: TfdsSource, split: str):
    """(images uint8 [n, H, W, C], labels int64 [n] or None) batches of a tf.data.Dataset of
    examples (CIFAR-100-20: the superclass labels, checked against TFDS's)."""
    labelled = split not in source.unlabeled_splits
    keys = ("label", "coarse_label") if source.coarse_labels else ("label",)
    keys = keys if labelled else ()
    tf_ds = tf_ds.map(lambda ex: (ex["image"], tuple(ex[k] for k in keys)))
    seen = 0
    for batch_images, columns in tfds.as_numpy(tf_ds.batch(_CONVERT_BATCH).prefetch(2)):
        batch_images = batch_images.reshape(-1, *source.image_shape)
        labels = None
        if source.coarse_labels and labelled:
            labels = _coarse_labels(columns[0].astype(np.int64), columns[1].astype(np.int64),
                                    source.name, split, seen)
        elif labelled:
            labels = columns[0].astype(np.int64)
        seen += len(batch_images)
        yield batch_images, labels


def _coarse_labels(fine: np.ndarray, coarse: np.ndarray, name: str, split: str,
                   first: int = 0) -> np.ndarray:
    """The superclass labels ``CIFAR100_TO_20[fine]``, checked against TFDS's coarse labels
    (`first`: the split's index of the first image given, for the message)."""
    mapped = CIFAR100_TO_20[fine]
    wrong = np.flatnonzero(mapped != coarse)
    if wrong.size:
        i = int(wrong[0])
        raise ValueError(
            f"{name} {split}: TFDS coarse_label disagrees with the standard CIFAR-100 -> 20 "
            f"superclass map on {wrong.size} of {fine.size} images (first: image {first + i}, "
            f"fine label {int(fine[i])} -> {int(mapped[i])}, TFDS says {int(coarse[i])}); "
            "the prepared data is corrupt or not CIFAR-100"
        )
    return mapped
