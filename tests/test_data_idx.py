"""IDX reader: the Debian Fashion-MNIST files and small generated files (raw, gz, corrupt)."""

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from mixem_tf.data import IdxFormatError, load_dataset, read_idx
from mixem_tf.data import idx

pytestmark = pytest.mark.core

_DEBIAN = Path(idx.FASHION_MNIST_DIR)
needs_debian_files = pytest.mark.skipif(
    not (_DEBIAN / "train-images-idx3-ubyte.gz").exists(),
    reason="Debian package dataset-fashion-mnist not installed",
)


def _idx_bytes(array: np.ndarray, code: int = 0x08) -> bytes:
    header = struct.pack(">BBBB", 0, 0, code, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    big_endian = array.astype(array.dtype.newbyteorder(">"))
    return header + big_endian.tobytes()


def _write(path: Path, data: bytes, gz: bool) -> Path:
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def _write_split(directory: Path, prefix: str, n: int, gz: bool, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    _write(directory / f"{prefix}-images-idx3-ubyte", _idx_bytes(images), gz)
    _write(directory / f"{prefix}-labels-idx1-ubyte", _idx_bytes(labels), gz)
    return images, labels


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_roundtrip(tmp_path, gz):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    path = _write(tmp_path / "a-idx3-ubyte", _idx_bytes(array), gz)
    out = read_idx(path)
    assert out.dtype == np.uint8 and out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out, array)
    out[0, 0, 0] = 7  # writable


def test_read_idx_other_dtypes_come_back_native(tmp_path):
    array = np.array([[1, -2], [300, 40000]], dtype=np.int32)
    out = read_idx(_write(tmp_path / "i32", _idx_bytes(array, 0x0C), False))
    assert out.dtype == np.dtype("int32") and out.dtype.isnative
    np.testing.assert_array_equal(out, array)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"\x00\x00", "too short"),
        (b"\x01\x00\x08\x01" + struct.pack(">I", 2) + b"\x00\x00", "magic"),
        (b"\x00\x00\x07\x01" + struct.pack(">I", 2) + b"\x00\x00", "magic"),
        (b"\x00\x00\x08\x03" + struct.pack(">I", 2), "truncated header"),
        (b"\x00\x00\x08\x01" + struct.pack(">I", 5) + b"\x00\x00", "truncated or corrupt"),
        (b"\x00\x00\x08\x01" + struct.pack(">I", 1) + b"\x00\x00", "truncated or corrupt"),
    ],
)
def test_read_idx_rejects_corrupt_files(tmp_path, data, message):
    path = tmp_path / "bad-idx1-ubyte"
    path.write_bytes(data)
    with pytest.raises(IdxFormatError, match=message) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_read_idx_rejects_corrupt_gzip(tmp_path):
    good = gzip.compress(_idx_bytes(np.zeros((50, 28, 28), np.uint8)))
    path = tmp_path / "cut-images-idx3-ubyte.gz"
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(IdxFormatError, match="corrupt gzip"):
        read_idx(path)


@pytest.mark.parametrize("gz", [False, True])
def test_fashion_mnist_from_generated_dir(tmp_path, gz):
    images, labels = _write_split(tmp_path, "t10k", 20, gz)
    ds = load_dataset("fashion_mnist", "test", data_dir=tmp_path)
    assert ds.images.shape == (20, 28, 28, 1) and ds.images.dtype == np.uint8
    np.testing.assert_array_equal(ds.images[..., 0], images)
    np.testing.assert_array_equal(ds.labels, labels)
    assert ds.labels.dtype == np.int64 and ds.num_classes == 10
    assert ds.class_names[0] == "T-shirt/top" and ds.split == "test"


def test_label_count_mismatch_is_reported(tmp_path):
    _write_split(tmp_path, "train", 5, False)
    _write(tmp_path / "train-labels-idx1-ubyte", _idx_bytes(np.zeros(4, np.uint8)), False)
    with pytest.raises(IdxFormatError, match="5 images but .* 4 labels"):
        load_dataset("fashion_mnist", "train", data_dir=tmp_path)


def test_out_of_range_labels_are_reported(tmp_path):
    _write_split(tmp_path, "train", 5, False)
    _write(tmp_path / "train-labels-idx1-ubyte", _idx_bytes(np.full(5, 12, np.uint8)), False)
    with pytest.raises(IdxFormatError, match="outside"):
        load_dataset("fashion_mnist", "train", data_dir=tmp_path)


def test_images_must_be_rank_3(tmp_path):
    _write_split(tmp_path, "train", 4, False)
    _write(tmp_path / "train-images-idx3-ubyte", _idx_bytes(np.zeros((4, 784), np.uint8)), False)
    with pytest.raises(IdxFormatError, match=r"\[N, H, W\]"):
        load_dataset("fashion_mnist", "train", data_dir=tmp_path)


@needs_debian_files
def test_debian_fashion_mnist_all_splits():
    ds = load_dataset("fashion_mnist", "all")
    assert ds.images.shape == (70000, 28, 28, 1) and ds.images.dtype == np.uint8
    assert ds.labels.dtype == np.int64
    np.testing.assert_array_equal(np.bincount(ds.labels, minlength=10), [7000] * 10)
    assert ds.images.max() == 255 and ds.images.min() == 0


@needs_debian_files
def test_debian_fashion_mnist_test_split():
    ds = load_dataset("fashion_mnist", "test")
    assert len(ds) == 10000
    np.testing.assert_array_equal(np.bincount(ds.labels), [1000] * 10)
