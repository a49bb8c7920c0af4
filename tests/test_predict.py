"""`python -m trainers.predict`: a folder with corrupt and non-image files, both runtimes,
the gallery."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from mixem_tf.gallery import gallery_size  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """10 digits as PNG (some 20×20 RGB, some in a sub-folder), a truncated PNG, a text file."""
    from PIL import Image
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("images")
    (root / "sub").mkdir()
    digits = (load_digits().images[:10] * 255 / 16).round().astype(np.uint8)
    for i, digit in enumerate(digits):
        image = Image.fromarray(digit)
        if i % 3 == 1:
            image = image.resize((20, 20)).convert("RGB")
        image.save(root / ("sub" if i % 4 == 0 else "") / f"digit{i}.png")
    (root / "broken.png").write_bytes((root / "digit1.png").read_bytes()[:60])
    (root / "notes.txt").write_text("not an image")
    return root


def _predict(*args):
    done = subprocess.run([sys.executable, "-m", "trainers.predict", *args], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _rows(path):
    with open(path, newline="") as handle:
        return {Path(row["path"]).name: row for row in csv.DictReader(handle)}


@pytest.mark.slow
def test_predict_reports_bad_files_and_draws_a_gallery(exported_model, image_folder, tmp_path):
    out, gallery = tmp_path / "clusters.csv", tmp_path / "gallery.png"
    done = _predict("--model", str(exported_model), "--images", str(image_folder), "--out",
                    str(out), "--batch-size", "4", "--gallery", str(gallery),
                    "--gallery-samples", "3", "--gallery-cell", "32")
    assert "12/12 files" in done.stderr and "2 unreadable" in done.stderr
    rows = _rows(out)
    assert len(rows) == 12 and list(next(iter(rows.values()))) == ["path", "cluster",
                                                                  "probability", "error"]
    assert rows["broken.png"]["cluster"] == ""
    assert rows["broken.png"]["error"].startswith("not a readable image")
    assert rows["notes.txt"]["cluster"] == ""
    assert rows["notes.txt"]["error"] == "not a supported image format (.txt)"
    good = [row for name, row in rows.items() if name.startswith("digit")]
    assert len(good) == 10 and all(row["error"] == "" for row in good)
    assert all(0.0 < float(row["probability"]) <= 1.0 for row in good)
    from PIL import Image

    with Image.open(gallery) as image:
        assert image.size == gallery_size(10, 3, 32)


@pytest.mark.slow
def test_predict_with_onnx_gives_the_same_clusters(exported_model, onnx_model, image_folder,
                                                   tmp_path):
    _predict("--model", str(exported_model.parent), "--images", str(image_folder), "--out",
             str(tmp_path / "tf.csv"))  # a model folder: its newest version
    _predict("--onnx", str(onnx_model), "--images", str(image_folder), "--out",
             str(tmp_path / "onnx.csv"))
    tf_rows, onnx_rows = _rows(tmp_path / "tf.csv"), _rows(tmp_path / "onnx.csv")
    assert {k: r["cluster"] for k, r in tf_rows.items()} == \
        {k: r["cluster"] for k, r in onnx_rows.items()}
    for name, row in tf_rows.items():
        if row["probability"]:
            assert abs(float(row["probability"]) - float(onnx_rows[name]["probability"])) < 1e-4


def test_predict_needs_exactly_one_model(tmp_path):
    done = subprocess.run([sys.executable, "-m", "trainers.predict", "--images", str(tmp_path)],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "--model" in done.stderr
