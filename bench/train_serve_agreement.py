"""Train/serve agreement on a mixed-format folder: the share of files an exported folder run
puts in the cluster of its own read-out, when the served model decodes the file itself.

    python -m bench.train_serve_agreement --work /tmp/agree --files 2000 [--max-side 1200] \\
        [--baseline /path/to/older/checkout]

Writes FILES images (JPEG, grey JPEG, PNG RGB/grey/RGBA, WebP, BMP, GIF; sides of 40 px to
MAX_SIDE, so most JPEGs are large enough for reduced-scale decoding) in two sub-folders,
trains a ConvNet run of one epoch at 32 px (K = 10) and exports it. Then, per file, the read-out's cluster
(`serving_default` on the run's decoded images, as evaluation computes it) against the served
cluster (`serving_bytes` on the file's bytes). With ``--baseline``, the same model is also
scored the way that checkout decoded: its folder decoder for the read-out side, and
TensorFlow's default JPEG decoding with the graph's resize for the served side.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import numpy as np

FORMATS = [("JPEG", "RGB", "jpg"), ("JPEG", "L", "jpeg"), ("PNG", "RGB", "png"),
           ("PNG", "L", "png"), ("PNG", "RGBA", "png"), ("WEBP", "RGB", "webp"),
           ("BMP", "RGB", "bmp"), ("GIF", "P", "gif")]
IMAGE_SIZE = 32
CHUNK = 64


def make_folder(root: Path, count: int, max_side: int) -> Path:
    from PIL import Image

    if (root / ".complete").exists():
        return root
    rng = np.random.default_rng(0)
    for i in range(count):
        group = root / ("a" if i % 2 else "b")
        group.mkdir(parents=True, exist_ok=True)
        fmt, mode, suffix = FORMATS[i % len(FORMATS)]
        height, width = (int(v) for v in rng.integers(40, max_side, 2))
        yy, xx = np.mgrid[0:height, 0:width]
        f = rng.uniform(4, 40, 3)
        waves = np.stack([np.sin(xx / f[0] + i), np.cos(yy / f[1]), np.sin((xx + yy) / f[2])],
                         -1)
        noise = rng.standard_normal(waves.shape, np.float32) * 20
        pixels = np.clip(waves * 90 + 128 + noise, 0, 255)
        image = Image.fromarray(pixels.astype(np.uint8))
        image = image.quantize(64) if mode == "P" else image.convert(mode)
        image.save(group / f"{i:05d}.{suffix}", fmt, quality=90)
    (root / ".complete").write_text("")
    return root


def _clusters(signature, key, inputs) -> np.ndarray:
    import tensorflow as tf

    return np.concatenate([signature(**{key: tf.constant(inputs[i:i + CHUNK])})["cluster"]
                           .numpy() for i in range(0, len(inputs), CHUNK)])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.train_serve_agreement",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--max-side", type=int, default=1200, help="largest image side (px)")
    parser.add_argument("--baseline", type=Path, default=None)
    args = parser.parse_args(argv)
    import tensorflow as tf

    from export.savedmodel import export_run
    from mixem_tf.data import load_folder
    from mixem_tf.data.folder import list_files
    from mixem_tf.settings import TrainConfig
    from mixem_tf.training import train_run

    root = make_folder(args.work / f"images-{args.files}-{args.max_side}", args.files,
                       args.max_side)
    run = args.work / "run"
    start = time.perf_counter()
    if not (run / "metrics.json").exists():  # a finished run of an earlier call is reused
        train_run(TrainConfig(dataset=f"folder:{root}", backbone="convnet", backbone_width=8,
                              image_size=IMAGE_SIZE, clusters=10, batch_size=128, epochs=1,
                              readout_settings="sklearn"), run, overwrite=True, verbose=0)
    version = export_run(run, args.work / "models", "m", verbose=False)
    served = tf.saved_model.load(str(version))
    files = list_files(root)
    data = [p.read_bytes() for p in files]
    images = np.asarray(load_folder(root, image_size=IMAGE_SIZE, progress=False).images)
    readout = _clusters(served.signatures["serving_default"], "images", images)
    from_files = _clusters(served.signatures["serving_bytes"], "image_bytes", data)
    rows = [("this code", float(np.mean(readout == from_files)))]
    if args.baseline is not None:
        spec = importlib.util.spec_from_file_location(
            "baseline_folder", args.baseline / "mixem_tf" / "data" / "folder.py")
        old = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = old  # its dataclasses look their module up
        spec.loader.exec_module(old)
        old_images = np.stack([old._decode(p, (IMAGE_SIZE, IMAGE_SIZE), 3, False)
                               for p in files])
        old_readout = _clusters(served.signatures["serving_default"], "images", old_images)
        old_served = np.array([int(served.signatures["serving_default"](
            images=tf.io.decode_image(d, channels=3, expand_animations=False)[None])
            ["cluster"].numpy()[0]) for d in data])
        rows.insert(0, ("baseline decoding", float(np.mean(old_readout == old_served))))
    print(f"{len(files)} files, {time.perf_counter() - start:.0f} s")
    print("| decoding | files in the read-out's cluster when served |")
    print("| --- | ---: |")
    for name, share in rows:
        print(f"| {name} | {100 * share:.2f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
