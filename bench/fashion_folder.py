"""Builds an image folder from Fashion-MNIST for the folder benchmarks.

    python -m bench.fashion_folder --out bench/results/fmnist-folder-2k --images 2000 --variety
    python -m bench.fashion_folder --out bench/results/fmnist-10k --images 10000

A seeded random sample of the 70,000 images (train + test), one first-level sub-folder per
class (so the folder loader finds labels, which only score). Plain: the 28-px grey images as
PNG. With `--variety`, what a user's folder looks like: each image coloured (the garment and
the background each get a random RGB colour), resized to a random size of 20-64 px per side
(aspect ratios differ), saved as PNG or JPEG, in nested sub-folders inside its class folder.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from mixem_tf.cli import run
from mixem_tf.data import load_dataset

CLASS_NAMES = ("tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker",
               "bag", "boot")


def sample(count: int, seed: int):
    """`count` images and labels of Fashion-MNIST (train + test), a seeded random sample."""
    parts = [load_dataset("fashion_mnist", split=split) for split in ("train", "test")]
    images = np.concatenate([part.images for part in parts])
    labels = np.concatenate([part.labels for part in parts])
    if not 1 <= count <= len(images):
        raise ValueError(f"--images must be between 1 and {len(images)}, got {count}")
    chosen = np.random.default_rng(seed).permutation(len(images))[:count]
    return images[chosen], labels[chosen]


def varied(image, rng) -> tuple[Image.Image, str]:
    """A coloured, resized copy of a grey [H, W, 1] image, and its file suffix."""
    grey = image[..., 0].astype(np.float32)[..., None] / 255.0
    garment, background = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    rgb = grey * garment + (1.0 - grey) * background
    size = tuple(int(v) for v in rng.integers(20, 65, 2))
    picture = Image.fromarray(rgb.round().astype(np.uint8)).resize(size, Image.BILINEAR)
    return picture, ".png" if rng.random() < 0.5 else ".jpg"


def build(out: Path, count: int, seed: int, variety: bool) -> None:
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"--out {out} already exists and is not empty")
    images, labels = sample(count, seed)
    rng = np.random.default_rng(seed + 1)
    for index, (image, label) in enumerate(zip(images, labels)):
        folder = out / f"{label}_{CLASS_NAMES[label]}"
        if variety:
            picture, suffix = varied(image, rng)
            folder = folder / f"part{index % 3}" / f"batch{index % 7}"
        else:
            picture, suffix = Image.fromarray(image[..., 0]), ".png"
        folder.mkdir(parents=True, exist_ok=True)
        picture.save(folder / f"img{index:05d}{suffix}")
    print(f"{count} images in {out}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fashion_folder", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variety", action="store_true",
                        help="RGB colours, mixed sizes, PNG and JPEG, nested folders")
    args = parser.parse_args(argv)
    build(args.out, args.images, args.seed, args.variety)
    return 0


if __name__ == "__main__":
    raise SystemExit(run(main))
