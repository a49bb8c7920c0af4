"""`python -m trainers.predict` in-process, with a stand-in model: the shared format list,
failing when nothing was clustered, and the gallery's labels with purity."""

import csv
from pathlib import Path

import numpy as np
import pytest

from mixem_tf.cli import run
from mixem_tf.data.folder import IMAGE_EXTENSIONS
from trainers import predict

pytestmark = pytest.mark.core
Image = pytest.importorskip("PIL.Image")


class _StandIn:
    """Stands in for an exported model: bright images are cluster 1, dark ones cluster 0."""

    clusters = {"0": {"size": 9, "majority_label": 2, "majority_name": "shoes", "purity": 0.9},
                "1": {"size": 11, "majority_label": 0, "majority_name": "clothes",
                      "purity": 0.4567}}

    def __call__(self, images):
        bright = images.reshape(len(images), -1).mean(axis=1) > 127
        probabilities = np.where(bright[:, None], [0.2, 0.8], [0.7, 0.3])
        return {"cluster": bright.astype(np.int64), "probabilities": probabilities}


@pytest.fixture
def stand_in(monkeypatch):
    import export.runtime

    monkeypatch.setattr(export.runtime, "load_predictor", lambda **kwargs: _StandIn())


def _main(*args):
    return run(predict.main, ["--model", "unused", *map(str, args)])


def _rows(path):
    with open(path, newline="") as handle:
        return {Path(row["path"]).name: row for row in csv.DictReader(handle)}


def test_predict_reads_exactly_the_formats_training_reads(stand_in, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    for i, suffix in enumerate(IMAGE_EXTENSIONS):
        Image.new("L", (6, 6), 250 if i % 2 else 5).save(images / f"img{i}{suffix}")
    Image.new("RGB", (6, 6)).save(images / "other.pcx")  # Pillow reads it; training does not
    (images / "notes.txt").write_text("x")
    assert _main("--images", images, "--out", tmp_path / "c.csv") == 0
    rows = _rows(tmp_path / "c.csv")
    assert len(rows) == len(IMAGE_EXTENSIONS) + 2
    for i, suffix in enumerate(IMAGE_EXTENSIONS):
        assert rows[f"img{i}{suffix}"]["cluster"] == str(i % 2), suffix
    assert rows["other.pcx"] == {"path": str(images / "other.pcx"), "cluster": "",
                                 "probability": "", "error": "not a supported image format (.pcx)"}
    assert rows["notes.txt"]["error"] == "not a supported image format (.txt)"
    assert f"clustered {len(IMAGE_EXTENSIONS)} of {len(IMAGE_EXTENSIONS) + 2} files" in \
        capsys.readouterr().err


@pytest.mark.parametrize("files", [{"a.png": b"", "b.jpg": b"garbage", "c.txt": b"x",
                                    "d.gif": b"GIF89a"}, {}])
def test_nothing_clustered_is_an_error_and_draws_no_gallery(stand_in, tmp_path, capsys, files):
    images = tmp_path / "images"
    images.mkdir()
    for name, data in files.items():
        (images / name).write_bytes(data)
    gallery = tmp_path / "gallery.png"
    assert _main("--images", images, "--out", tmp_path / "c.csv", "--gallery", gallery) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and f"clustered 0 of {len(files)} files" in lines[0]
    assert "Traceback" not in err and not gallery.exists()
    rows = _rows(tmp_path / "c.csv")
    assert len(rows) == len(files) and all(row["error"] for row in rows.values())


def test_gallery_labels_show_the_majority_label_with_its_purity(stand_in, tmp_path,
                                                                monkeypatch):
    import mixem_tf.gallery

    drawn = {}
    real = mixem_tf.gallery.draw_gallery

    def spy(samples, labels, **kwargs):
        drawn.update(samples=samples, labels=labels)
        return real(samples, labels, **kwargs)

    monkeypatch.setattr(mixem_tf.gallery, "draw_gallery", spy)
    images = tmp_path / "images"
    images.mkdir()
    for i in range(5):
        Image.new("L", (6, 6), 250 if i < 3 else 5).save(images / f"{i}.png")
    gallery = tmp_path / "gallery.png"
    assert _main("--images", images, "--out", tmp_path / "c.csv", "--gallery", gallery,
                 "--gallery-cell", "16") == 0
    assert drawn["labels"] == {
        0: "cluster 0: 2 images\nmean confidence 0.70\ntraining data:\nmostly shoes (90%)",
        1: "cluster 1: 3 images\nmean confidence 0.80\ntraining data:\nmostly clothes (46%)"}
    assert [len(drawn["samples"][k]) for k in (0, 1)] == [2, 3]
    with Image.open(gallery) as picture:
        assert picture.size == mixem_tf.gallery.gallery_size(2, 8, 16)


def test_a_label_without_training_labels_gives_only_the_size():
    from mixem_tf.gallery import cluster_label

    assert cluster_label(2, 7) == "cluster 2: 7 images"  # an ONNX model has no clusters.json
    assert cluster_label(0, 1, "3") == "cluster 0: 1 images\ntraining data:\nmostly 3"


class _Graded:
    """One cluster; an image's probability is its brightness / 255 (no clusters.json)."""

    clusters = None

    def __call__(self, images):
        brightness = images.reshape(len(images), -1).mean(axis=1) / 255.0
        return {"cluster": np.zeros(len(images), np.int64),
                "probabilities": np.stack([brightness, 1 - brightness], axis=1)}


@pytest.mark.parametrize("order", ["confident", "uncertain", "random"])
def test_the_gallery_order_picks_the_best_the_worst_or_a_seeded_random_sample(
        tmp_path, monkeypatch, order):
    import mixem_tf.gallery

    drawn = []
    monkeypatch.setattr(mixem_tf.gallery, "draw_gallery",
                        lambda samples, labels, **kw: drawn.append((samples, labels)) or
                        Image.new("RGB", (1, 1)))
    images = tmp_path / "images"
    images.mkdir()
    levels = [10 * i + 5 for i in range(20)]  # file i has brightness 10 i + 5
    for i, level in enumerate(levels):
        Image.new("L", (4, 4), level).save(images / f"{i:02d}.png")
    shown = []
    for seed in (0, 0, 1):
        predict.predict_folder(_Graded(), images, tmp_path / "c.csv", batch_size=7,
                               gallery=tmp_path / "g.png", gallery_samples=4,
                               gallery_order=order, seed=seed, progress=False)
        shown.append([int(image[0, 0, 0]) for image in drawn[-1][0][0]])
    mean = np.mean(levels) / 255
    assert drawn[-1][1] == {0: f"cluster 0: 20 images\nmean confidence {mean:.2f}"}
    if order == "confident":
        assert shown[0] == [195, 185, 175, 165]
    elif order == "uncertain":
        assert shown[0] == [5, 15, 25, 35]
    else:  # file order, reproducible by seed, neither end of the ranking
        assert shown[0] == shown[1] == sorted(shown[0]) and shown[0] != shown[2]
        assert shown[0] not in ([5, 15, 25, 35], [165, 175, 185, 195])


def test_an_unknown_gallery_order_is_refused(tmp_path):
    with pytest.raises(ValueError, match="--gallery-order must be one of random, confident"):
        predict.predict_folder(_Graded(), tmp_path, tmp_path / "c.csv", gallery_order="best")
@pytest.mark.skipif(not hasattr(__import__("os"), "mkfifo"), reason="needs named pipes")
def test_a_named_pipe_gets_its_reason_and_is_never_opened(stand_in, tmp_path, capsys):
    import os

    images = tmp_path / "images"
    images.mkdir()
    Image.new("L", (6, 6), 250).save(images / "a.png")
    os.mkfifo(images / "pipe.png")  # opening it would wait forever for a writer
    assert _main("--images", images, "--out", tmp_path / "c.csv") == 0
    rows = _rows(tmp_path / "c.csv")
    assert rows["a.png"]["cluster"] == "1"
    assert rows["pipe.png"]["error"] == "not a regular file (a named pipe); not opened"
