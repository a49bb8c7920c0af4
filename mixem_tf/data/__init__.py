"""Datasets for unsupervised image clustering: `load_dataset`, `load_protocol`, `ImageDataset`.

Every source returns an `ImageDataset`: uint8 images ``[N, H, W, C]`` plus evaluation-only
labels. Importing this package needs only numpy; TensorFlow/TFDS (``stl10``, ``cifar10``,
``cifar100_20``, ``mnist``, Fashion-MNIST without IDX files), scikit-learn (``digits``) and
Pillow (``folder:PATH``) are imported when a source needs them.

Example:
    >>> from mixem_tf.data import load_protocol
    >>> train, evaluation = load_protocol("fashion_mnist", train_on="whole", evaluate_on="all")
    >>> for batch in train.batches(256, seed=epoch):   # uint8 [256, 28, 28, 1]
    ...     ...
"""

from mixem_tf.data.dataset import (
    DatasetUnavailableError,
    ImageDataset,
    parse_image_size,
    resize_images,
)
from mixem_tf.data.folder import load_folder
from mixem_tf.data.idx import IdxFormatError, read_idx
from mixem_tf.data.protocols import ProtocolData, load_protocol
from mixem_tf.data.registry import (
    DATASET_FACTS,
    DATASET_NAMES,
    DatasetFacts,
    DatasetInfo,
    dataset_facts,
    dataset_info,
    load_dataset,
)
from mixem_tf.data.tfds_source import CIFAR100_TO_20

__all__ = [
    "CIFAR100_TO_20",
    "DATASET_FACTS",
    "DATASET_NAMES",
    "DatasetFacts",
    "DatasetInfo",
    "DatasetUnavailableError",
    "IdxFormatError",
    "ImageDataset",
    "ProtocolData",
    "dataset_facts",
    "dataset_info",
    "load_dataset",
    "load_folder",
    "load_protocol",
    "parse_image_size",
    "read_idx",
    "resize_images",
]
