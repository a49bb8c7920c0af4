"""The decoded-image cache behind folder:PATH: hit, miss, partial update, corrupt and killed
builds, concurrent builders, and files that are not regular files."""

import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

from mixem_tf.data import cache as cache_module
from mixem_tf.data import folder as folder_module
from mixem_tf.data.folder import decode_image, load_folder

pytestmark = pytest.mark.core
Image = pytest.importorskip("PIL.Image")


def _write(path, seed, size=(30, 20), fmt=None):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path, fmt)


@pytest.fixture
def photos(tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    for i in range(10):
        _write(root / f"{i:02d}.png", i)
    return root


@pytest.fixture
def decodes(monkeypatch):
    """The files `decode_image` was called on (in this process: num_workers=1)."""
    calls = []

    def counting(path, *args, **kwargs):
        calls.append(os.path.basename(path))
        return real(path, *args, **kwargs)

    real = folder_module.decode_image
    monkeypatch.setattr(folder_module, "decode_image", counting)
    return calls


def _load(root, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", folder_module.SkippedFilesWarning)
        return load_folder(root, image_size=12, num_workers=1, progress=False, **kwargs)


def _entry_files(cache_dir):
    (entry,) = [p for p in cache_dir.iterdir()]
    return entry, sorted(p.name for p in entry.iterdir())


def test_second_load_maps_the_cache_without_decoding(photos, decodes, decoded_cache):
    first = _load(photos)
    assert len(decodes) == 10
    second = _load(photos)
    assert len(decodes) == 10  # nothing decoded again
    assert isinstance(second.images.base, np.memmap) or isinstance(second.images, np.memmap)
    assert not second.images.flags.writeable
    np.testing.assert_array_equal(first.images, second.images)
    expected = np.stack([decode_image(photos / f"{i:02d}.png", (12, 12)) for i in range(10)])
    np.testing.assert_array_equal(second.images, expected)  # the cache is the decoding, exactly
    entry, names = _entry_files(decoded_cache)
    assert names[0].startswith("images-") and names[1:] == ["index.npz", "lock"]
    assert (entry / names[0]).stat().st_size == 10 * 12 * 12 * 3


def test_each_size_channels_and_crop_rule_is_its_own_entry(photos, decodes, decoded_cache):
    _load(photos)
    _load(photos, channels=1)
    _load(photos, keep_aspect=True)
    assert len(decodes) == 30 and len(list(decoded_cache.iterdir())) == 3


def test_added_removed_and_changed_files_are_the_only_ones_decoded(photos, decodes,
                                                                   decoded_cache):
    _load(photos)
    decodes.clear()
    _write(photos / "10.png", 100)                       # added
    (photos / "03.png").unlink()                         # removed
    _write(photos / "05.png", 500, size=(31, 20))        # changed (size and mtime)
    (photos / "07.png").write_bytes(b"now corrupt")      # changed into a corrupt file
    ds = _load(photos)
    assert sorted(decodes) == ["05.png", "07.png", "10.png"]
    names = [f"{i:02d}.png" for i in (0, 1, 2, 4, 5, 6, 8, 9, 10)]
    expected = np.stack([decode_image(photos / n, (12, 12)) for n in names])
    np.testing.assert_array_equal(ds.images, expected)
    assert [p.name for p, _ in ds.scan.skipped] == ["07.png"]
    _, files = _entry_files(decoded_cache)
    assert sum(n.startswith("images-") for n in files) == 1  # the old image file is gone
    decodes.clear()
    again = _load(photos)  # the corrupt file is remembered, not retried
    assert decodes == [] and [p.name for p, _ in again.scan.skipped] == ["07.png"]


@pytest.mark.parametrize("damage", ["truncate images", "garbage index"])
def test_a_damaged_entry_is_detected_and_rebuilt(photos, decodes, decoded_cache, damage):
    reference = np.array(_load(photos).images)
    entry, names = _entry_files(decoded_cache)
    if damage == "truncate images":
        os.truncate(entry / names[0], 1000)
    else:
        (entry / "index.npz").write_bytes(b"PK\x03\x04 not a zip")
    decodes.clear()
    ds = _load(photos)
    assert len(decodes) == 10
    np.testing.assert_array_equal(ds.images, reference)


def _script(body):
    """A builder process: `body` replaces `folder.decode_image` and counts in `calls`."""
    head = ("import os, sys, time, warnings\nwarnings.simplefilter('ignore')\n"
            "from mixem_tf.data import folder\nreal = folder.decode_image\n")
    tail = ("\nds = folder.load_folder(sys.argv[1], image_size=12, num_workers=1, "
            "progress=False)\nprint('decoded', calls[0], 'images', len(ds))\n")
    return head + textwrap.dedent(body) + tail


def test_a_killed_build_leaves_no_entry_that_looks_complete(photos, decoded_cache):
    kill_on_fifth = """
        calls = [0]
        def decode(*args, **kwargs):
            calls[0] += 1
            if calls[0] == 5:
                os.kill(os.getpid(), 9)
            return real(*args, **kwargs)
        folder.decode_image = decode
    """
    done = subprocess.run([sys.executable, "-c", _script(kill_on_fifth), str(photos)],
                          capture_output=True, text=True, env=os.environ.copy())
    assert done.returncode == -9
    entry, names = _entry_files(decoded_cache)
    assert "index.npz" not in names and any(n.startswith("images-") for n in names)
    key = cache_module.CacheEntry({"source": "folder", "root": str(photos.resolve()),
                                   "size": [12, 12], "channels": 3, "crop": "stretch"},
                                  label="photos-12x12x3")
    assert key.path == entry and key.read_index() is None
    ds = _load(photos)  # rebuilt in full; the killed build's image file is removed
    assert len(ds) == 10
    _, names = _entry_files(decoded_cache)
    assert sum(n.startswith("images-") for n in names) == 1


def test_two_builders_at_once_decode_each_file_once(photos, decoded_cache):
    slow = """
        calls = [0]
        def decode(*args, **kwargs):
            calls[0] += 1
            time.sleep(0.05)
            return real(*args, **kwargs)
        folder.decode_image = decode
    """
    builders = [subprocess.Popen([sys.executable, "-c", _script(slow), str(photos)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env=os.environ.copy()) for _ in range(2)]
    outputs = [b.communicate(timeout=120) for b in builders]
    assert [b.returncode for b in builders] == [0, 0], outputs
    counts = sorted(int(out.split()[1]) for out, _ in outputs)
    assert counts == [0, 10] and all(out.split()[3] == "10" for out, _ in outputs)
    assert "waiting for another process" in "".join(err for _, err in outputs)
    np.testing.assert_array_equal(_load(photos).images,
                                  np.stack([decode_image(p, (12, 12))
                                            for p in sorted(photos.iterdir())]))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_named_pipe_is_skipped_without_being_opened(photos):
    os.mkfifo(photos / "pipe.png")  # opening it for reading would block forever
    os.symlink(photos / "missing.png", photos / "dangling.png")
    ds = _load(photos)
    assert len(ds) == 10
    reasons = {p.name: why for p, why in ds.scan.skipped}
    assert reasons == {"pipe.png": "not a regular file (a named pipe); not opened",
                       "dangling.png": "broken symbolic link"}


def test_decoding_processes_fill_the_same_entry(photos, decoded_cache):
    for i in range(10, 200):
        _write(photos / f"{i:03d}.png", i)
    pooled = load_folder(photos, image_size=12, num_workers=2, progress=False)
    files = sorted(photos.iterdir())
    np.testing.assert_array_equal(pooled.images[[0, 77, 199]],
                                  np.stack([decode_image(files[i], (12, 12))
                                            for i in (0, 77, 199)]))


def _memory_map(tmp_path, rows=1000, shape=(32, 32, 3)):
    values = np.random.default_rng(0).integers(0, 256, (rows, *shape), dtype=np.uint8)
    values.tofile(tmp_path / "rows.u8")
    return values, np.memmap(tmp_path / "rows.u8", np.uint8, "r", shape=values.shape)


@pytest.mark.parametrize("rows", [[7, 0, 899, 7, -1], np.arange(20, 40), [],
                                  slice(None), slice(5, 900, 7), slice(998, 2000)])
@pytest.mark.parametrize("mapped_bytes", [0, 2**30])  # read from the file, through the map
def test_read_rows_gives_what_indexing_gives(tmp_path, monkeypatch, rows, mapped_bytes):
    monkeypatch.setattr(cache_module, "MAPPED_BYTES", mapped_bytes)
    values, mapped = _memory_map(tmp_path)
    for images, expected in ((mapped, values), (mapped[100:], values[100:])):
        got = cache_module.read_rows(images, rows)
        assert got.shape == expected[rows].shape
        assert type(got) is np.ndarray or mapped_bytes  # read from the file: in memory
        np.testing.assert_array_equal(got, expected[rows])
        np.testing.assert_array_equal(cache_module.read_rows(expected, rows), expected[rows])
    with pytest.raises(IndexError, match="index 1000 is out of bounds"):
        cache_module.read_rows(mapped, [3, 1000])


def _mapped_kib(path) -> int:
    """Resident KiB of `path`'s mappings in this process (/proc/self/smaps)."""
    total, inside = 0, False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            if line[:1].isdigit() or line[:1] in "abcdef":  # a mapping's header line
                inside = line.rstrip().endswith(str(path))
            elif inside and line.startswith("Rss:"):
                total += int(line.split()[1])
    return total


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps"), reason="needs Linux's smaps")
def test_reading_shuffled_rows_of_a_large_map_maps_none_of_the_file(tmp_path, monkeypatch):
    """Rows read through a map pull in the pages around them; read_rows reads the file of a
    map larger than MAPPED_BYTES."""
    values, mapped = _memory_map(tmp_path, rows=2000)
    monkeypatch.setattr(cache_module, "MAPPED_BYTES", mapped.nbytes - 1)
    order = np.random.default_rng(1).permutation(len(values))
    for start in range(0, len(order), 100):
        cache_module.read_rows(mapped, order[start:start + 100])
    assert _mapped_kib(tmp_path / "rows.u8") == 0
    np.take(mapped, order[:100], axis=0)  # through the map, for contrast
    assert _mapped_kib(tmp_path / "rows.u8") >= 100 * values[0].nbytes // 1024


def test_cache_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MIXEM_TF_CACHE", str(tmp_path / "c"))
    assert cache_module.cache_root() == tmp_path / "c"
    monkeypatch.delenv("MIXEM_TF_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_module.cache_root() == tmp_path / "xdg" / "mixem-tf"


def test_the_cache_command_lists_and_clears(photos, decoded_cache, capsys):
    _load(photos)
    assert cache_module.main([]) == 0
    assert "1 entries under" in capsys.readouterr().out
    assert cache_module.main(["--clear"]) == 0
    assert list(decoded_cache.iterdir()) == []
