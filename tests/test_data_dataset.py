"""ImageDataset, batching and the batched resize."""

import numpy as np
import pytest

from mixem_tf.data import ImageDataset, parse_image_size, resize_images

pytestmark = pytest.mark.core


def _toy(n=10, labels=True, shape=(4, 5, 1)):
    images = np.arange(n, dtype=np.uint8).reshape(n, 1, 1, 1) * np.ones((1, *shape), np.uint8)
    return ImageDataset(
        name="toy",
        images=images,
        labels=np.arange(n) % 3 if labels else None,
        num_classes=3 if labels else None,
        class_names=("a", "b", "c") if labels else None,
    )


def _ids(batch):
    """Each toy image is filled with its index."""
    return batch[:, 0, 0, 0].astype(int).tolist()


def test_fields_and_shape():
    ds = _toy()
    assert len(ds) == 10
    assert ds.image_shape == (4, 5, 1)
    assert ds.images.dtype == np.uint8 and ds.images.flags.c_contiguous
    assert ds.labels.dtype == np.int64
    assert ds.class_names == ("a", "b", "c")
    assert "n=10" in repr(ds)


def test_makes_images_contiguous():
    images = np.zeros((4, 6, 6, 3), np.uint8)[:, ::2]
    ds = ImageDataset("x", images)
    assert ds.images.flags.c_contiguous and ds.image_shape == (3, 6, 3)


@pytest.mark.parametrize(
    "images, labels, num_classes, error",
    [
        (np.zeros((2, 4, 4, 1), np.float32), None, None, TypeError),
        (np.zeros((2, 4, 4), np.uint8), None, None, ValueError),
        (np.zeros((2, 4, 4, 2), np.uint8), None, None, ValueError),
        (np.zeros((0, 4, 4, 1), np.uint8), None, None, ValueError),
        (np.zeros((2, 4, 4, 1), np.uint8), np.zeros(3), None, ValueError),
        (np.zeros((2, 4, 4, 1), np.uint8), np.array([0.5, 1.0]), None, TypeError),
        (np.zeros((2, 4, 4, 1), np.uint8), np.array([0, 3]), 3, ValueError),
        (np.zeros((2, 4, 4, 1), np.uint8), np.array([-1, 0]), 3, ValueError),
    ],
)
def test_rejects_bad_construction(images, labels, num_classes, error):
    with pytest.raises(error):
        ImageDataset("bad", images, labels, num_classes)


def test_batches_shuffled_cover_every_image_once():
    ds = _toy(10)
    batches = list(ds.batches(3, shuffle=True, seed=1, drop_remainder=False))
    assert [b.shape[0] for b in batches] == [3, 3, 3, 1]
    assert all(b.dtype == np.uint8 and b.shape[1:] == (4, 5, 1) for b in batches)
    seen = sum((_ids(b) for b in batches), [])
    assert sorted(seen) == list(range(10))
    assert seen != list(range(10))  # actually shuffled


def test_batches_are_deterministic_per_seed():
    ds = _toy(50)
    first = [_ids(b) for b in ds.batches(8, seed=3)]
    again = [_ids(b) for b in ds.batches(8, seed=3)]
    other = [_ids(b) for b in ds.batches(8, seed=4)]
    assert first == again
    assert first != other


def test_drop_remainder_and_steps():
    ds = _toy(10)
    kept = list(ds.batches(4, seed=0))
    assert [b.shape[0] for b in kept] == [4, 4]
    assert len(set(sum((_ids(b) for b in kept), []))) == 8
    assert ds.steps(4) == 2 and ds.steps(4, drop_remainder=False) == 3
    assert ds.steps(5, drop_remainder=False) == 2
    assert len(list(ds.batches(10))) == 1  # batch == dataset size is fine


def test_unshuffled_batches_are_ordered_read_only_views():
    ds = _toy(7)
    batches = list(ds.batches(3, shuffle=False, drop_remainder=False))
    assert [_ids(b) for b in batches] == [[0, 1, 2], [3, 4, 5], [6]]
    assert not batches[0].flags.writeable
    assert np.shares_memory(batches[0], ds.images)


def test_batches_yield_images_only():
    batch = next(_toy().batches(2))
    assert isinstance(batch, np.ndarray)


@pytest.mark.parametrize("batch_size, error", [(0, ValueError), (-2, ValueError),
                                               (2.5, TypeError), (True, TypeError)])  # fmt: skip
def test_bad_batch_sizes(batch_size, error):
    with pytest.raises(error):
        _toy().batches(batch_size)


def test_batch_larger_than_data_with_drop_remainder():
    ds = _toy(10)
    with pytest.raises(ValueError, match="larger than the 10 images"):
        ds.batches(11)  # raised at the call, not at the first next()
    assert [b.shape[0] for b in ds.batches(11, drop_remainder=False)] == [10]


def test_subset():
    ds = _toy(10)
    sub = ds.subset([7, 2])
    assert _ids(sub.images) == [7, 2] and sub.labels.tolist() == [1, 2]
    assert sub.num_classes == 3
    assert _ids(ds.subset(ds.labels == 0).images) == [0, 3, 6, 9]
    assert len(ds.subset(slice(0, 4))) == 4
    with pytest.raises(ValueError):
        ds.subset(np.array([True, False]))
    with pytest.raises(ValueError, match="at least one image"):
        ds.subset([])


def test_concatenate():
    a, b = _toy(4), _toy(3)
    both = ImageDataset.concatenate(a, b)
    assert len(both) == 7 and both.labels.tolist() == [0, 1, 2, 0, 0, 1, 2]
    assert both.num_classes == 3 and both.name == "toy"
    unlabelled = ImageDataset.concatenate(a, _toy(2, labels=False), name="mix")
    assert unlabelled.labels is None and unlabelled.name == "mix"
    assert len(ImageDataset.concatenate([a, b])) == 7


def test_concatenate_shape_mismatch_is_clear():
    with pytest.raises(ValueError, match=r"different image shapes.*\(4, 5, 1\).*\(4, 4, 1\)"):
        ImageDataset.concatenate(_toy(2), _toy(2, shape=(4, 4, 1)))
    with pytest.raises(ValueError):
        ImageDataset.concatenate()


def test_with_channels():
    rgb = ImageDataset("c", np.array([[[[255, 0, 0], [0, 255, 0]]]], np.uint8))
    grey = rgb.with_channels(1)
    assert grey.images.reshape(-1).tolist() == [76, 150]  # 0.299 * 255, 0.587 * 255
    assert grey.with_channels(3).images.shape == (1, 1, 2, 3)
    with pytest.raises(ValueError):
        rgb.with_channels(2)


@pytest.mark.parametrize(
    "size, expected",
    [(32, (32, 32)), ((24, 40), (24, 40)), ([8, 9], (8, 9)), (np.int64(5), (5, 5)), (7.0, (7, 7))],
)
def test_parse_image_size(size, expected):
    assert parse_image_size(size) == expected


@pytest.mark.parametrize("size", [0, -3, 5000, (1, 2, 3), (0, 4), "96", None, 2.5, True])
def test_parse_image_size_rejects_nonsense(size):
    with pytest.raises((ValueError, TypeError)):
        parse_image_size(size)


@pytest.mark.parametrize("size", [(32, 32), (9, 20), (5, 5), (64, 48)])
def test_resize_matches_pillow_bilinear(size):
    from PIL import Image

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 28, 30, 3), dtype=np.uint8)
    ours = resize_images(images, size)
    assert ours.shape == (6, *size, 3) and ours.dtype == np.uint8
    bilinear = Image.Resampling.BILINEAR
    pillow = np.stack([np.asarray(Image.fromarray(x).resize(size[::-1], bilinear)) for x in images])
    assert np.abs(ours.astype(int) - pillow).max() <= 1  # Pillow rounds between its passes


def test_resized_keeps_labels_and_skips_no_op():
    ds = _toy(5)
    assert ds.resized((4, 5)) is ds
    big = ds.resized(8)
    assert big.image_shape == (8, 8, 1) and big.labels is ds.labels
    assert _ids(big.images) == list(range(5))  # constant images stay constant


def test_concatenating_back_to_back_parts_of_one_memory_map_copies_nothing(tmp_path):
    data = np.random.default_rng(0).integers(0, 256, (9, 2, 3, 1), dtype=np.uint8)
    data.tofile(tmp_path / "images.u8")
    mapped = np.memmap(tmp_path / "images.u8", np.uint8, "r", shape=data.shape)
    a, b, c = (ImageDataset("x", mapped[s]) for s in (slice(0, 2), slice(2, 7), slice(7, 9)))
    joined = ImageDataset.concatenate(a, b, c)
    assert np.shares_memory(joined.images, mapped) and not joined.images.flags.writeable
    np.testing.assert_array_equal(joined.images, data)
    swapped = ImageDataset.concatenate(b, a)  # not in storage order: a copy, still right
    assert not np.shares_memory(swapped.images, mapped)
    np.testing.assert_array_equal(swapped.images, np.concatenate([data[2:7], data[:2]]))
