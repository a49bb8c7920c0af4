"""The README's own-folder commands, run as written on a generated ~/photos (a CPU run)."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

ROOT = Path(__file__).resolve().parent.parent


def own_folder_commands() -> list[str]:
    """The command lines of the first bash block under "## Your own images"."""
    text = (ROOT / "README.md").read_text()
    block = text.split("## Your own images", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


def write_photos(folder: Path, per_kind: int = 24, size: int = 24) -> None:
    """Three kinds of picture in sub-folders (their labels): horizontal stripes, vertical
    stripes, a disk; random phase, colour and noise."""
    rng = np.random.default_rng(0)
    from PIL import Image

    y, x = np.mgrid[:size, :size]
    for kind in ("horizontal", "vertical", "disk"):
        (folder / kind).mkdir(parents=True)
        for i in range(per_kind):
            shift, period = rng.integers(0, 8), rng.integers(6, 10)
            if kind == "horizontal":
                mask = (y + shift) % period < period // 2
            elif kind == "vertical":
                mask = (x + shift) % period < period // 2
            else:
                cy, cx = rng.integers(8, size - 8, 2)
                mask = (y - cy) ** 2 + (x - cx) ** 2 < rng.integers(20, 50)
            colour = rng.integers(120, 256, 3)
            image = mask[..., None] * colour + rng.normal(0, 12, (size, size, 3))
            Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(
                folder / kind / f"{i:03d}.png")


@pytest.mark.slow
def test_the_readmes_own_folder_commands_run_as_written(tmp_path):
    commands = own_folder_commands()
    assert [c.split()[2] for c in commands] == ["trainers.fit", "export.savedmodel",
                                                "trainers.predict"]
    write_photos(tmp_path / "photos")
    env = {**os.environ, "HOME": str(tmp_path), "CUDA_VISIBLE_DEVICES": "",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    outputs = []
    for command in commands:
        done = subprocess.run(["bash", "-c", command.replace("python ", f"{sys.executable} ", 1)],
                              cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=900)
        assert done.returncode == 0, f"{command}\n{done.stderr[-2000:]}"
        outputs.append(done)
    assert "no GPU found: training with the CPU recipe for folders" in outputs[0].stderr
    assert "72 training images: batch size 64" in outputs[0].stderr
    settings = json.loads((tmp_path / "runs/photos/config.json").read_text())["settings"]
    assert (settings["backbone"], settings["image_size"], settings["epochs"]) == ("convnet", 32, 30)
    with open(tmp_path / "clusters.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 72 and all(0 <= int(r["cluster"]) < 10 and not r["error"] for r in rows)
    kinds = {}  # cluster → the kinds (sub-folders) of its images
    for row in rows:
        kinds.setdefault(row["cluster"], []).append(Path(row["path"]).parent.name)
    purity = sum(max(map(ks.count, set(ks))) for ks in kinds.values()) / len(rows)
    assert purity > 0.8  # the clusters follow the three kinds of picture
    assert (tmp_path / "gallery.png").stat().st_size > 0
