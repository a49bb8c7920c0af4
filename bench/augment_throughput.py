"""Throughput of the augmentation pipeline (two views per image), compiled, warm-up excluded.

Runs under the current ``KERAS_BACKEND``. A small functional ``keras.Model`` draws two views
of a uint8 batch with one :class:`mixem_tf.augment.Augmenter` and returns a two-number
checksum (so the timing is the augmentation, not a device-to-host copy of the views;
``--fetch-views`` returns the views instead). ``predict_on_batch`` traces and compiles the call once (``tf.function``,
with XLA where ``--jit-compile`` says so, or ``jax.jit``); the first ``--warmup`` calls, which
include the compilation, are not timed.

    KERAS_BACKEND=tensorflow python -m bench.augment_throughput
    KERAS_BACKEND=jax python -m bench.augment_throughput --shapes 32x32x3 --steps 20

Prints one line per shape: augmented images/s (views: 2 per source image) and source
images/s (pairs of views). Shapes map to datasets: 28x28x1 → mnist, 32x32x3 → cifar10,
96x96x3 → stl10, anything else → ``folder:`` with that size.
"""

import argparse
import time

import keras
import numpy as np
from keras import ops

from mixem_tf.augment import Augmenter
from mixem_tf.methods.augmentation import PIPELINES, view_config

_DATASET_OF_SHAPE = {(28, 28, 1): "mnist", (32, 32, 3): "cifar10", (96, 96, 3): "stl10"}


def parse_shape(text):
    try:
        h, w, c = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"shape must look like 32x32x3, got {text!r}") from None
    if min(h, w) < 1 or c not in (1, 3):
        raise argparse.ArgumentTypeError(f"need H, W >= 1 and C in (1, 3), got {text!r}")
    return h, w, c


def positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def two_views_model(config, shape, seed=0, fetch_views=False):
    """Functional model: uint8 batch -> two views (or their means, a 2-number checksum)."""
    inputs = keras.Input(shape, dtype="uint8")
    augmenter = Augmenter(config, seed=seed)
    a, b = augmenter(inputs), augmenter(inputs)
    outputs = [a, b] if fetch_views else ops.stack([ops.mean(a), ops.mean(b)])
    return keras.Model(inputs, outputs)


def measure(shape, method, batch, steps, warmup, jit_compile, fetch_views, seed=0):
    dataset = _DATASET_OF_SHAPE.get(shape, "folder:bench")
    config = view_config(method, dataset, image_size=shape[:2])
    model = two_views_model(config, shape, seed=seed, fetch_views=fetch_views)
    model.compile(jit_compile=jit_compile)
    images = np.random.default_rng(seed).integers(0, 256, (batch,) + shape, dtype=np.uint8)
    start = time.perf_counter()
    for _ in range(warmup):
        model.predict_on_batch(images)
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(steps):
        out = model.predict_on_batch(images)
    elapsed = time.perf_counter() - start
    if not fetch_views and not np.all(np.isfinite(out)):
        raise RuntimeError(f"non-finite views for shape {shape}")
    return dict(dataset=dataset, compile_s=compile_s, step_ms=1e3 * elapsed / steps,
                views_per_s=2 * batch * steps / elapsed, pairs_per_s=batch * steps / elapsed)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pipeline", dest="method", choices=sorted(PIPELINES), default="simclr",
                        help="view pipeline (simclr: MIX'EM's and SimCLR's; mice; cdec)")
    parser.add_argument("--shapes", type=lambda s: [parse_shape(v) for v in s.split(",")],
                        default=[(28, 28, 1), (32, 32, 3), (96, 96, 3)],
                        help="comma-separated HxWxC (default: 28x28x1,32x32x3,96x96x3)")
    parser.add_argument("--batch", type=positive_int, default=256)
    parser.add_argument("--steps", type=positive_int, default=10, help="timed calls per shape")
    parser.add_argument("--warmup", type=positive_int, default=2,
                        help="untimed calls first (compilation included)")
    parser.add_argument("--jit-compile", choices=("auto", "true", "false"), default="auto",
                        help="XLA for the TensorFlow backend (JAX always compiles)")
    parser.add_argument("--fetch-views", action="store_true",
                        help="return the views to the host (adds a device-to-host copy)")
    args = parser.parse_args(argv)
    jit = {"auto": "auto", "true": True, "false": False}[args.jit_compile]

    print(f"backend={keras.backend.backend()} method={args.method} batch={args.batch} "
          f"steps={args.steps} warmup={args.warmup} jit_compile={args.jit_compile} "
          f"fetch_views={args.fetch_views}")
    for shape in args.shapes:
        r = measure(shape, args.method, args.batch, args.steps, args.warmup, jit,
                    args.fetch_views)
        print(f"{'x'.join(map(str, shape)):>9} ({r['dataset']}): "
              f"{r['views_per_s']:9.0f} augmented images/s  "
              f"({r['pairs_per_s']:.0f} images/s as view pairs, {r['step_ms']:.1f} ms/batch, "
              f"warm-up {r['compile_s']:.1f} s)", flush=True)


if __name__ == "__main__":
    main()
