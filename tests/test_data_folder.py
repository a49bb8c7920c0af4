"""folder:PATH: a generated tree of real images in several formats, with junk mixed in."""

import io
import warnings

import numpy as np
import pytest

from mixem_tf.data import load_dataset, load_folder
from mixem_tf.data.folder import (SkippedFilesWarning, absolute_folder_name, is_image_file,
                                   relative_files)

pytestmark = pytest.mark.core
Image = pytest.importorskip("PIL.Image")

RED, GREEN, BLUE = (220, 20, 30), (30, 200, 40), (20, 40, 210)


def _solid(mode, size, colour):
    return Image.new(mode, size, colour)


def _gif_two_frames(path):
    """Palette GIF with transparency; frame 0 red, frame 1 blue."""
    frames = [_solid("RGB", (12, 9), RED), _solid("RGB", (12, 9), BLUE)]
    frames = [f.convert("P", palette=Image.Palette.ADAPTIVE, colors=4) for f in frames]
    frames[0].save(path, save_all=True, append_images=frames[1:], transparency=3, duration=50)


def _truncated_jpeg(path):
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])


@pytest.fixture
def tree(tmp_path):
    """cats: JPEG RGB, PNG RGBA, nested BMP; dogs: grey PNG, palette GIF, .JPEG; plus junk."""
    root = tmp_path / "images"
    (root / "cats" / "nested" / "deeper").mkdir(parents=True)
    (root / "dogs").mkdir()
    (root / ".hidden").mkdir()
    _solid("RGB", (40, 30), RED).save(root / "cats" / "a.jpg", quality=95)
    _solid("RGBA", (20, 50), GREEN + (128,)).save(root / "cats" / "b.png")
    _solid("RGB", (64, 64), BLUE).save(root / "cats" / "nested" / "deeper" / "c.bmp")
    _solid("L", (10, 10), 77).save(root / "dogs" / "d.png")
    _gif_two_frames(root / "dogs" / "e.gif")
    _solid("RGB", (300, 200), GREEN).save(root / "dogs" / "F.JPEG", "JPEG", quality=95)
    _truncated_jpeg(root / "dogs" / "broken.jpg")
    (root / "dogs" / "noise.png").write_bytes(np.random.default_rng(1).bytes(500))
    (root / "notes.txt").write_text("not an image")
    (root / "dogs" / "labels.txt").write_text("not an image either")
    _solid("RGB", (8, 8), RED).save(root / ".hidden" / "skip.png")  # hidden: ignored silently
    return root


def _load_with_warning(path, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = load_folder(path, **kwargs)
    return ds, [w for w in caught if issubclass(w.category, UserWarning)]


def test_loads_every_readable_image_with_subfolder_labels(tree):
    ds, caught = _load_with_warning(tree, image_size=16)
    assert ds.images.shape == (6, 16, 16, 3) and ds.images.dtype == np.uint8
    assert ds.class_names == ("cats", "dogs") and ds.num_classes == 2
    assert ds.labels.tolist() == [0, 0, 0, 1, 1, 1]  # sorted by relative path
    assert ds.split == "all"
    centre = ds.images[:, 8, 8].astype(int)
    # cats/a.jpg (JPEG red), cats/b.png (RGBA: alpha dropped), cats/nested/deeper/c.bmp
    assert np.abs(centre[0] - RED).max() <= 6
    assert centre[1].tolist() == list(GREEN)
    assert centre[2].tolist() == list(BLUE)
    # dogs/F.JPEG (upper-case extension, decoded at reduced scale), d.png (grey), e.gif
    assert np.abs(centre[3] - GREEN).max() <= 6
    assert centre[4].tolist() == [77, 77, 77]
    assert np.abs(centre[5] - RED).max() <= 6  # first GIF frame, not the blue second one


def test_scan_counts_found_used_skipped_and_lists_every_skipped_file(tree, tmp_path):
    ds, caught = _load_with_warning(tree, image_size=16)
    scan = ds.scan
    assert (scan.root, scan.found, scan.used, len(scan.skipped)) == (tree, 10, 6, 4)
    reasons = {path.relative_to(tree).as_posix(): why for path, why in scan.skipped}
    assert sorted(reasons) == ["dogs/broken.jpg", "dogs/labels.txt", "dogs/noise.png",
                               "notes.txt"]  # hidden files are not even found
    assert "truncated" in reasons["dogs/broken.jpg"]
    assert reasons["dogs/noise.png"].startswith("not a readable image")
    assert reasons["notes.txt"] == "not a supported image format (.txt)"
    assert str(tree) not in reasons["dogs/noise.png"]  # Pillow's message repeats the path
    scan.write_skipped(tmp_path / "skipped.csv")
    import csv

    with open(tmp_path / "skipped.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["path"], row["reason"]) for row in rows] == [(str(p), why)
                                                             for p, why in scan.skipped]
    listed = scan.summary(listed_in=tmp_path / "skipped.csv")
    assert listed == (f"folder:{tree}: 10 files found, 6 images used, 4 skipped (2 unreadable, "
                      f"2 not a supported image format); the list: {tmp_path / 'skipped.csv'}")


def test_one_short_warning_names_the_first_few_skipped_files(tree):
    for i in range(40):  # a long list must not become a long line
        (tree / "dogs" / f"junk-file-with-a-long-name-{i:02d}.png").write_bytes(b"x" * 10)
    ds, caught = _load_with_warning(tree, image_size=16)
    assert len(caught) == 1 and issubclass(caught[0].category, SkippedFilesWarning)
    text = str(caught[0].message)
    assert text.startswith(f"folder:{tree}: 50 files found, 6 images used, 44 skipped "
                           "(42 unreadable, 2 not a supported image format), e.g. ")
    assert text.count("(not a readable image") == 3  # broken.jpg and the first two junk files
    assert text.endswith("; and 41 more") and "\n" not in text and len(text) < 600


def test_scan_survives_resizing_and_channel_conversion(tree):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = load_dataset(f"folder:{tree}", image_size=12, channels=1)
    assert ds.images.shape == (6, 12, 12, 1) and ds.scan.used == 6
    clean = load_folder(tree / "cats", image_size=8)
    assert clean.scan.skipped == () and clean.scan.summary() == (
        f"folder:{tree / 'cats'}: 3 files found, 3 images used")


def test_webp_and_tiff_are_images(tmp_path):
    _solid("RGB", (10, 10), RED).save(tmp_path / "a.webp", lossless=True)
    frames = [_solid("RGB", (10, 10), BLUE), _solid("RGB", (10, 10), RED)]
    frames[0].save(tmp_path / "b.tiff", save_all=True, append_images=frames[1:])  # 2 pages
    Image.fromarray(np.full((6, 6), 40000, np.uint16)).save(tmp_path / "c.TIF")  # 16-bit grey
    assert all(is_image_file(p) for p in tmp_path.iterdir())
    ds = load_folder(tmp_path, image_size=4)
    assert ds.scan.skipped == () and len(ds) == 3
    assert ds.images[:, 2, 2].tolist() == [list(RED), list(BLUE), [156, 156, 156]]


def test_relative_folder_names_become_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "link").symlink_to(tmp_path)
    assert absolute_folder_name("folder:imgs/a") == f"folder:{tmp_path / 'imgs' / 'a'}"
    assert absolute_folder_name("folder:link/../x") == f"folder:{tmp_path / 'x'}"
    assert absolute_folder_name("folder:link") == f"folder:{tmp_path / 'link'}"  # link kept
    assert absolute_folder_name("folder:~/pics") == f"folder:{tmp_path / 'home' / 'pics'}"
    assert absolute_folder_name("folder:/data/x") == "folder:/data/x"
    assert absolute_folder_name("digits") == "digits"
    assert absolute_folder_name("folder:") == "folder:"  # left for the registry to refuse


def test_files_are_listed_by_their_path_parts_flat_or_nested(tmp_path):
    for rel in ["b.jpg", "a-x.jpg", "a/b.jpg", "a.b/c.jpg", "a/a/z.jpg", "A.jpg", ".h.jpg"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    # "a" < "a-x.jpg" < "a.b" part by part, although "a-x.jpg" < "a.b/c.jpg" < "a/b.jpg" as
    # whole strings; hidden files are never listed
    assert relative_files(tmp_path) == ["A.jpg", "a/a/z.jpg", "a/b.jpg", "a-x.jpg",
                                        "a.b/c.jpg", "b.jpg"]
    flat = tmp_path / "a.b"
    (flat / "a.jpg").write_bytes(b"")
    assert relative_files(flat) == ["a.jpg", "c.jpg"]


def test_grey_channel_option(tree):
    ds, _ = _load_with_warning(tree, image_size=(8, 12), channels=1)
    assert ds.images.shape == (6, 8, 12, 1)
    assert ds.images[4, 4, 6, 0] == 77


def test_unlabelled_when_an_image_is_outside_subfolders(tree):
    _solid("RGB", (16, 16), BLUE).save(tree / "loose.png")
    ds, _ = _load_with_warning(tree, image_size=8)
    assert len(ds) == 7 and ds.labels is None and ds.num_classes is None


def test_keep_aspect_centre_crops(tmp_path):
    array = np.zeros((10, 30, 3), np.uint8)
    array[:, 10:20] = 255  # white middle third
    Image.fromarray(array).save(tmp_path / "wide.png")
    stretched = load_folder(tmp_path, image_size=10).images[0]
    cropped = load_folder(tmp_path, image_size=10, keep_aspect=True).images[0]
    assert stretched[5, 0].tolist() == [0, 0, 0]
    assert cropped.min() == 255


def test_registry_name_and_default_size(tree):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = load_dataset(f"folder:{tree}")
        small = load_dataset(f"folder:{tree}", split="all", image_size=24, channels=1)
        with pytest.raises(ValueError, match="no held-out test images"):
            load_dataset(f"folder:{tree}", split="test")
    assert ds.images.shape == (6, 96, 96, 3)
    assert small.images.shape == (6, 24, 24, 1)


def test_single_threaded_matches_threaded(tree):
    threaded, _ = _load_with_warning(tree, image_size=16, num_workers=4)
    serial, _ = _load_with_warning(tree, image_size=16, num_workers=1)
    np.testing.assert_array_equal(threaded.images, serial.images)


def test_missing_path(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match=f"folder:{missing}: no such folder"):
        load_folder(missing)
    with pytest.raises(FileNotFoundError):
        load_dataset(f"folder:{missing}")


def test_path_is_a_file_is_a_value_error(tmp_path):
    (tmp_path / "x.png").write_bytes(b"")
    with pytest.raises(ValueError, match=r"x\.png is a file, not a folder") as error:
        load_dataset(f"folder:{tmp_path / 'x.png'}")
    assert not isinstance(error.value, OSError)


def test_empty_folder(tmp_path):
    with pytest.raises(ValueError, match=r"no image files .*no files at all"):
        load_folder(tmp_path)


def test_folder_without_image_files(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(ValueError, match="1 other file"):
        load_folder(tmp_path)


def test_folder_with_only_bad_images(tmp_path):
    (tmp_path / "a.png").write_bytes(b"not a png")
    _truncated_jpeg(tmp_path / "b.jpg")
    with pytest.raises(ValueError, match=r"none of the 2 image files .*2 unreadable.*a\.png"):
        load_folder(tmp_path)


@pytest.mark.parametrize("size", [0, -5, 100000, (3, 4, 5), "large"])
def test_nonsense_image_size(tmp_path, size):
    _solid("RGB", (4, 4), RED).save(tmp_path / "a.png")
    with pytest.raises((ValueError, TypeError), match="image_size"):
        load_folder(tmp_path, image_size=size)


def test_bad_channels_and_empty_folder_name(tmp_path):
    with pytest.raises(ValueError, match="channels"):
        load_folder(tmp_path, channels=2)
    with pytest.raises(ValueError, match="needs a path"):
        load_dataset("folder:")


def _save_mode(path, kind):
    if kind == "png16":
        Image.fromarray(np.full((6, 6), 40000, np.uint16)).save(path)  # 16-bit grey
    elif kind == "cmyk":
        Image.new("CMYK", (6, 6), (0, 255, 255, 0)).save(path, quality=95)  # pure red
    elif kind == "bilevel":
        Image.new("1", (6, 6), 1).save(path)
    elif kind == "la":
        Image.new("LA", (6, 6), (200, 10)).save(path)
    elif kind == "palette":
        Image.new("RGB", (6, 6), BLUE).convert("P", palette=Image.Palette.ADAPTIVE).save(path)


@pytest.mark.parametrize(
    "kind, suffix, expected",
    [
        ("png16", ".png", [156, 156, 156]),  # 40000 / 257, the top 8 bits
        ("cmyk", ".jpg", [255, 0, 0]),
        ("bilevel", ".bmp", [255, 255, 255]),
        ("la", ".png", [200, 200, 200]),
        ("palette", ".png", list(BLUE)),
    ],
)
def test_other_pixel_modes_become_rgb(tmp_path, kind, suffix, expected):
    _save_mode(tmp_path / f"x{suffix}", kind)
    ds = load_folder(tmp_path, image_size=4)
    tolerance = 6 if kind == "cmyk" else 1  # JPEG
    assert np.abs(ds.images[0, 2, 2].astype(int) - expected).max() <= tolerance
