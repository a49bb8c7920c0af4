"""Image folders built from Fashion-MNIST, for benches that need a user's folder with known
classes: each class is a first-level sub-folder (so the run can check its clusters against it).

    python -m bench.fmnist_folder --out bench/results/fmnist-folder --images 2000
    python -m bench.fmnist_folder --out bench/results/fmnist-6 --counts 3000 1500 700 400 200 100 --grey

`--counts` takes that many images of the first classes (unequal sizes); `--images N` takes N
spread over all ten. Without `--grey` a folder looks like a user's photos: RGB (each image
tinted), mixed sizes (28 to 72 px), mixed formats (JPEG, PNG, WebP) and nested folders
(`CLASS/batch-K/NNNNN.ext`). With `--grey`: 28-px PNGs, one folder per class.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

__all__ = ["make_folder"]

FORMATS = (("jpg", "JPEG"), ("png", "PNG"), ("webp", "WEBP"))


def _name(class_name: str) -> str:
    return class_name.lower().replace("/", "-").replace(" ", "-")


def make_folder(out, *, counts=None, images: int | None = None, grey: bool = False,
                seed: int = 0) -> Path:
    """Writes the folder (if `out` holds no images yet) and returns its path."""
    from PIL import Image

    from mixem_tf.data import load_dataset

    out = Path(out)
    if out.is_dir() and any(out.rglob("*.*")):
        return out
    data = load_dataset("fashion_mnist", "train")
    rng = np.random.default_rng(seed)
    if counts is None:
        per_class = [images // 10 + (k < images % 10) for k in range(10)]
    else:
        per_class = list(counts)
    for k, count in enumerate(per_class):
        chosen = rng.choice(np.flatnonzero(data.labels == k), count, replace=False)
        for i, index in enumerate(chosen):
            pixels = data.images[index, ..., 0]
            folder = out / _name(data.class_names[k])
            if grey:
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(pixels).save(folder / f"{i:05d}.png")
                continue
            tint = rng.uniform(0.5, 1.0, 3)
            rgb = (pixels[..., None] * tint).astype(np.uint8)
            side = int(rng.integers(28, 73))
            image = Image.fromarray(rgb).resize((side, side), Image.BILINEAR)
            extension, fmt = FORMATS[int(rng.integers(len(FORMATS)))]
            folder = folder / f"batch-{i % 4}"
            folder.mkdir(parents=True, exist_ok=True)
            image.save(folder / f"{i:05d}.{extension}", fmt)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--counts", type=int, nargs="+", default=None)
    parser.add_argument("--grey", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(make_folder(args.out, counts=args.counts, images=args.images, grey=args.grey,
                      seed=args.seed))


if __name__ == "__main__":
    main()
