"""TFDS sources, offline: `tfds.testing.mock_data` for the loaders, an empty data_dir for the
unavailable-data error. Needs TensorFlow and tensorflow-datasets (not core)."""

import numpy as np
import pytest

from mixem_tf.data import DatasetUnavailableError, load_dataset, load_protocol
from mixem_tf.data import idx
from mixem_tf.data.tfds_source import CIFAR100_TO_20

tfds = pytest.importorskip("tensorflow_datasets")
N = 12  # mocked examples per split


@pytest.fixture
def no_idx_files(monkeypatch, tmp_path):
    """Hide the Debian Fashion-MNIST files so that fashion_mnist goes to TFDS."""
    monkeypatch.setattr(idx, "FASHION_MNIST_DIR", str(tmp_path / "no-idx-here"))


@pytest.mark.parametrize(
    "name, split, shape, classes",
    [
        ("stl10", "train", (96, 96, 3), 10),
        ("stl10", "test", (96, 96, 3), 10),
        ("cifar10", "train", (32, 32, 3), 10),
        ("cifar10", "test", (32, 32, 3), 10),
        ("mnist", "train", (28, 28, 1), 10),
        ("mnist", "test", (28, 28, 1), 10),
    ],
)
def test_mocked_labelled_splits(name, split, shape, classes):
    with tfds.testing.mock_data(num_examples=N):
        ds = load_dataset(name, split)
    assert ds.images.shape == (N, *shape) and ds.images.dtype == np.uint8
    assert ds.images.flags.c_contiguous
    assert ds.labels.shape == (N,) and ds.labels.dtype == np.int64
    assert 0 <= ds.labels.min() and ds.labels.max() < classes
    assert ds.num_classes == classes and len(ds.class_names) == classes
    assert ds.name == name and ds.split == split


def test_mocked_stl10_unlabeled_has_no_labels():
    with tfds.testing.mock_data(num_examples=N):
        ds = load_dataset("stl10", "unlabeled")
    assert ds.images.shape == (N, 96, 96, 3) and ds.labels is None


def test_mocked_fashion_mnist_falls_back_to_tfds(no_idx_files, tmp_path):
    with tfds.testing.mock_data(num_examples=N):
        ds = load_dataset("fashion_mnist", "train", data_dir=tmp_path)
    assert ds.images.shape == (N, 28, 28, 1) and ds.labels.dtype == np.int64


def _cifar100_as_dataset(coarse_of):
    """A mock `_as_dataset` with fine labels 0..99 and coarse labels `coarse_of[fine]`."""

    def as_dataset(self, split, **kwargs):
        import tensorflow as tf

        fine = (np.arange(100) * 7) % 100  # all fine classes, shuffled
        rng = np.random.default_rng(0)
        return tf.data.Dataset.from_tensor_slices(
            {
                "id": [f"{split}_{i}" for i in range(100)],
                "image": rng.integers(0, 256, (100, 32, 32, 3), dtype=np.uint8),
                "label": fine.astype(np.int64),
                "coarse_label": coarse_of[fine].astype(np.int64),
            }
        )

    return as_dataset


def test_mocked_cifar100_20_uses_superclasses():
    with tfds.testing.mock_data(as_dataset_fn=_cifar100_as_dataset(CIFAR100_TO_20)):
        ds = load_dataset("cifar100_20", "test")
    assert ds.images.shape == (100, 32, 32, 3) and ds.num_classes == 20
    np.testing.assert_array_equal(ds.labels, CIFAR100_TO_20[(np.arange(100) * 7) % 100])
    np.testing.assert_array_equal(np.bincount(ds.labels), [5] * 20)
    assert ds.class_names[0] == "aquatic_mammals" and ds.class_names[-1] == "vehicles_2"


def test_cifar100_coarse_label_disagreement_is_an_error():
    wrong = CIFAR100_TO_20.copy()
    wrong[4] = 1  # beaver in "fish"
    with tfds.testing.mock_data(as_dataset_fn=_cifar100_as_dataset(wrong)):
        with pytest.raises(ValueError, match="disagrees .* on 1 of 100 images"):
            load_dataset("cifar100_20", "train")


def test_mocked_protocols_and_resize():
    with tfds.testing.mock_data(num_examples=N):
        train, evaluation = load_protocol("stl10", image_size=32, include_unlabeled=True)
        whole, everything = load_protocol("cifar10", train_on="whole", evaluate_on="all")
        only_train, test = load_protocol("mnist", train_on="train", evaluate_on="test")
    assert train.images.shape == (3 * N, 32, 32, 3) and train.labels is None
    assert evaluation.images.shape == (N, 32, 32, 3) and evaluation.split == "test"
    assert everything is whole and len(whole) == 2 * N and whole.labels.shape == (2 * N,)
    assert len(only_train) == N and only_train.split == "train" and test.split == "test"


def test_splits_are_one_memory_map_joined_without_copies_and_read_once(monkeypatch,
                                                                         tmp_path):
    with tfds.testing.mock_data(num_examples=N):
        train, evaluation = load_protocol("stl10", include_unlabeled=True)
        first = np.array(train.images)
    assert isinstance(train.images.base, np.memmap) or isinstance(train.images, np.memmap)
    root = train.images.base
    while isinstance(root.base, np.ndarray):
        root = root.base
    # train + test + unlabeled: one map, in that order; the joins are views of it.
    assert train.images.shape == (3 * N, 96, 96, 3) and not train.images.flags.writeable
    assert np.shares_memory(train.images, evaluation.images)
    np.testing.assert_array_equal(train.images[N:2 * N], evaluation.images)

    def no_tfds(self, *args, **kwargs):
        raise AssertionError("read from TFDS again")

    # The patch is undone inside the mock, so the mock's own teardown restores TFDS.
    with tfds.testing.mock_data(num_examples=N), monkeypatch.context() as patch:
        patch.setattr(tfds.core.DatasetBuilder, "as_dataset", no_tfds)
        again, _ = load_protocol("stl10", include_unlabeled=True)  # from the cache
        patch.setenv("MIXEM_TF_CACHE", str(tmp_path / "empty"))
        with pytest.raises(DatasetUnavailableError):  # no cache: TFDS (refusing) is read
            load_protocol("stl10", include_unlabeled=True)
    np.testing.assert_array_equal(again.images, first)


def test_missing_data_raises_unavailable_with_instructions(tmp_path):
    with pytest.raises(DatasetUnavailableError) as info:
        load_dataset("cifar10", "train", data_dir=tmp_path)
    message = str(info.value)
    assert "'cifar10'" in message  # dataset and builder
    assert str(tmp_path) in message  # where it looked
    assert "tfds build cifar10" in message and "download=True" in message
    assert "--data-dir" in message
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_missing_fashion_mnist_mentions_idx_files(no_idx_files, tmp_path):
    with pytest.raises(DatasetUnavailableError) as info:
        load_dataset("fashion_mnist", "test", data_dir=tmp_path)
    message = str(info.value)
    assert "t10k-images-idx3-ubyte" in message and "tfds build fashion_mnist" in message
    assert str(tmp_path) in message


def test_missing_stl10_unlabeled_names_the_builder(tmp_path):
    with pytest.raises(DatasetUnavailableError, match=r"'stl10' \(split 'unlabeled'\)"):
        load_dataset("stl10", "unlabeled", data_dir=tmp_path)


def test_failed_download_is_reported_without_network_traceback(monkeypatch, tmp_path):
    def offline(self, *args, **kwargs):
        raise ConnectionError("Failed to resolve 'storage.googleapis.com'")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", offline)
    with pytest.raises(DatasetUnavailableError) as info:
        load_dataset("mnist", "train", data_dir=tmp_path, download=True)
    message = str(info.value)
    assert "could not download and prepare builder 'mnist'" in message
    assert "ConnectionError: Failed to resolve" in message and str(tmp_path) in message
    assert info.value.__cause__ is None and info.value.__suppress_context__
