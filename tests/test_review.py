"""Label-free scores and the HTML review end to end: an unlabeled `folder:` run prints a table
with numbers, `trainers.review` writes a page with one section per cluster that references
only its own files, and headless Chromium renders it without console errors."""

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cli_helpers import call_entry_point

K = 4


def _write_digits(folder: Path, count: int, nested: bool):
    """`count` digit images as 16-px PNGs; in sub-folders by class when `nested` (labels)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    for i in range(count):
        target = folder / f"class{digits.target[i]}" if nested else folder
        target.mkdir(parents=True, exist_ok=True)
        image = (digits.images[i] * 16).clip(0, 255).astype(np.uint8)
        Image.fromarray(image).resize((16, 16)).save(target / f"img{i:04d}.png")


def _train(tmp_path_factory, capsys_free_name, nested):
    from trainers.fit import main

    root = tmp_path_factory.mktemp(capsys_free_name)
    _write_digits(root / "images", 240, nested)
    out = root / "run"
    args = ["--dataset", f"folder:{root / 'images'}", "--method", "simclr", "--epochs", "1",
            "--batch-size", "120", "--backbone-width", "8", "--quiet", "--out", str(out)]
    if not nested:
        args += ["--clusters", str(K)]
    return main, args, out


@pytest.fixture(scope="module")
def unlabeled(tmp_path_factory):
    main, args, out = _train(tmp_path_factory, "unlabeled", nested=False)
    return main, args, out


def test_an_unlabeled_folder_run_prints_a_table_with_numbers(unlabeled, capsys):
    main, args, out = unlabeled
    code, stdout, err = call_entry_point(main, capsys, *args)
    assert code == 0, err
    header = stdout.splitlines()[0].split()
    assert header == ["readout", "K", "stability", "kappa", "separation", "confidence",
                      "non-empty", "smallest", "largest", "default"]
    rows = [line.split() for line in stdout.splitlines()[1:] if line[:1] in "hzp"]
    assert {row[0].split("/")[0] for row in rows} == {"h", "z", "pixels"}
    for row in rows:  # every score is a number in its range
        stability, kappa, separation, confidence = (float(v) for v in row[2:6])
        assert 0 <= stability <= 1 and -1 <= kappa <= 1 and -1 <= separation <= 1
        assert 1 / K <= confidence <= 1
    assert re.search(r"default read-out h/l2/kmeans: stability 0\.\d{4}  "
                     r"separation -?0\.\d{4}$", stdout.strip().splitlines()[-1])
    metrics = json.loads((out / "metrics.json").read_text())
    for row in metrics["readouts"]:  # the served T is the label-free one
        assert row["temperature"] == row["label_free"]["temperature"] > 0
        assert sum(c["size"] for c in row["cluster_scores"]) == 240
    assert metrics["pixels"]["images"] == 240
    assert metrics["pixels"]["label_free"]["stability"] >= 0
    assert (out / "logs" / "projector" / "projector_config.pbtxt").is_file()


class _Page(HTMLParser):
    """Every local reference, cluster section and its size in a review page."""

    def __init__(self):
        super().__init__()
        self.references, self.sections, self.sizes, self._in_facts = [], [], [], False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for name in ("src", "href"):
            if name in attrs and not attrs[name].startswith("#"):
                self.references.append(attrs[name])
        if tag == "h3" and attrs.get("id", "").startswith("cluster-"):
            self.sections.append(int(attrs["id"].split("-")[1]))
        if tag == "p" and attrs.get("class") == "facts":
            self._in_facts = True

    def handle_data(self, data):
        if self._in_facts:
            self.sizes.append(int(data))
            self._in_facts = False


def _review(capsys, run_dir, out):
    from trainers.review import main

    return call_entry_point(main, capsys, "--run", run_dir, "--out", out, "--thumbnails", "5")


def test_the_review_page_has_a_section_per_cluster_and_references_only_its_own_files(
        unlabeled, capsys, tmp_path):
    main, args, run_dir = unlabeled
    if not (run_dir / "metrics.json").is_file():
        call_entry_point(main, capsys, *args)
    out = tmp_path / "review"
    code, _, err = _review(capsys, run_dir, out)
    assert code == 0, err
    assert f"review: {out / 'index.html'} ({K} clusters)" in err
    page = _Page()
    text = (out / "index.html").read_text()
    page.feed(text)
    assert page.sections == list(range(K))
    clusters = json.loads((run_dir / "metrics.json").read_text())
    assert sum(page.sizes) == 240
    for reference in page.references:
        target = (out / reference).resolve()
        assert target.is_file() and out.resolve() in target.parents, reference
    assert "http" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "<script" not in text and "ACC" not in text
    assert len(list((out / "thumbs").iterdir())) <= K * 3 * 5
    assert clusters["readouts"]  # the run itself was left as it was
    # A second review replaces the first; a folder with other files is refused untouched.
    assert _review(capsys, run_dir, out)[0] == 0
    (out / "notes.txt").write_text("mine")
    code, _, err = _review(capsys, run_dir, out)
    assert code == 2 and "holds other files" in err and (out / "notes.txt").read_text() == "mine"


def test_a_labelled_run_adds_the_checks_and_a_confusion_matrix(tmp_path_factory, capsys):
    main, args, run_dir = _train(tmp_path_factory, "labelled", nested=True)
    assert call_entry_point(main, capsys, *args)[0] == 0
    out = run_dir.parent / "review"
    assert _review(capsys, run_dir, out)[0] == 0
    text = (out / "index.html").read_text()
    assert "Clusters against labels (a check)" in text and "<th>ACC</th>" in text
    assert text.count('class="check"') == len(re.findall(r'<h3 id="cluster-', text))


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium")
def test_headless_chromium_renders_the_page_without_console_errors(unlabeled, capsys,
                                                                      tmp_path):
    main, args, run_dir = unlabeled
    if not (run_dir / "metrics.json").is_file():
        call_entry_point(main, capsys, *args)
    out = tmp_path / "review"
    assert _review(capsys, run_dir, out)[0] == 0
    shot = tmp_path / "review.png"
    result = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
         "--v=0", "--window-size=1280,1600", f"--screenshot={shot}",
         (out / "index.html").as_uri()], capture_output=True, text=True, timeout=120)
    assert ":CONSOLE" not in result.stderr, result.stderr
    with Image.open(shot) as image:
        assert image.size == (1280, 1600)
        assert len(set(image.convert("L").getdata())) > 50  # drawn, not a blank page
