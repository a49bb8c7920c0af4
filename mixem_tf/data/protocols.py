"""Train/evaluation protocols (docs/METHODS.md §5.1): which images train, which are scored.

Each method declares its paper's protocol (`MethodDeclaration.protocol`).

- ``train_on="whole"``: train + test concatenated (MiCE, cdec, MIX'EM, SimCLR + K-means);
  ``"train"``: the train split only.
- ``evaluate_on="test"``: the test split (MIX'EM, §1.4); ``"all"``: train + test (MiCE §2.4,
  cdec §3.4).
- ``include_unlabeled=True`` (STL-10 only) adds the 100k unlabeled images to training, never
  to evaluation. No paper protocol here uses it (MIX'EM's "STL10" option does).

Single-split sources (``digits``, ``folder:PATH``) have no test split: both sides get the
whole set (the same `ImageDataset` object), i.e. "test" means "all" for them.

Deliberate difference: MIX'EM holds out a random 7% (STL-10) / 10% (CIFAR) of train + test
as a validation set for monitoring (§1.3); ``"whole"`` keeps every image. Carve a validation
slice with `ImageDataset.subset` if you need one.
"""

from __future__ import annotations

from typing import NamedTuple

from mixem_tf.data.dataset import ImageDataset
from mixem_tf.data.registry import dataset_info, load_dataset, load_splits

__all__ = ["ProtocolData", "load_protocol"]

TRAIN_ON = ("whole", "train")
EVALUATE_ON = ("test", "all")
class ProtocolData(NamedTuple):
    """(train, evaluation) datasets; unpacks like a tuple."""

    train: ImageDataset
    evaluation: ImageDataset


def load_protocol(
    name: str,
    *,
    train_on: str = "whole",
    evaluate_on: str = "test",
    data_dir=None,
    image_size=None,
    include_unlabeled: bool = False,
    channels: int | None = None,
    download: bool = False,
) -> ProtocolData:
    """The training and evaluation datasets of `name` under one protocol.

    Args:
        name, data_dir, image_size, channels, download: as for `load_dataset`.
        train_on: ``"whole"`` (train + test) or ``"train"``.
        evaluate_on: ``"test"`` or ``"all"`` (train + test).
        include_unlabeled: add STL-10's unlabeled split to training (labels become None).

    Raises:
        ValueError: unknown name, train_on or evaluate_on; include_unlabeled for a dataset
            without an unlabeled split.
        DatasetUnavailableError: as for `load_dataset`.
    """
    if train_on not in TRAIN_ON:
        raise ValueError(f"train_on must be one of {TRAIN_ON}, got {train_on!r}")
    if evaluate_on not in EVALUATE_ON:
        raise ValueError(f"evaluate_on must be one of {EVALUATE_ON}, got {evaluate_on!r}")
    info = dataset_info(name)
    if include_unlabeled and "unlabeled" not in info.splits:
        raise ValueError(f"include_unlabeled: dataset {name!r} has no unlabeled split")

    if info.single_split:
        whole = load_dataset(name, "all", data_dir=data_dir, image_size=image_size,
                             channels=channels, download=download)
        return ProtocolData(whole, whole)

    # One load: consecutive rows of one cache entry, so the joins below copy nothing.
    splits = ["train", "test"] + (["unlabeled"] if include_unlabeled else [])
    train, test, *unlabeled = load_splits(name, splits, data_dir=data_dir,
                                          image_size=image_size, channels=channels,
                                          download=download)
    whole = None
    if train_on == "whole" or evaluate_on == "all":
        whole = ImageDataset.concatenate(train, test, name=name)
    train_ds = whole if train_on == "whole" else train
    eval_ds = test if evaluate_on == "test" else whole
    if include_unlabeled:
        train_ds = ImageDataset.concatenate(train_ds, *unlabeled, name=name)
    return ProtocolData(train_ds, eval_ds)
