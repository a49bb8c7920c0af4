"""Training throughput of a method's real step (its model, views, loss, hooks and optimiser as
`train_run` builds them), in pairs/s, under the current KERAS_BACKEND.

    python -m bench.train_throughput                        # MIX'EM: ConvNet 28x28, ResNet-18 32x32
    python -m bench.train_throughput --method cdec --cases convnet:28:1
    python -m bench.train_throughput --cases resnet18:32:3 --batch-size 512 \\
        --precision float32 mixed_bfloat16                  # the GPU comparison

A case is BACKBONE:SIZE:CHANNELS; the settings are the method's recipe for Fashion-MNIST
(1 channel) or CIFAR-10 (3 channels) at that size and batch, on random uint8 images fed as
`train_run` feeds them. A "pair" is one source image (MiCE makes three views of it). Reported:
pairs/s as batch / the median step time over `--steps` steps after `--warmup` steps, the time
to build the model, the first step (tracing and compilation included) and the process's peak
RSS while building and training.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import keras
import numpy as np

from bench.memory import PeakRSS
from mixem_tf.feeding import EpochBatches
from mixem_tf.methods import METHODS, build_method
from mixem_tf.settings import TrainConfig
from mixem_tf.report import format_table
from mixem_tf.training import make_optimizer

NUM_CLUSTERS = 10


class StepTimes(keras.callbacks.Callback):
    """Seconds from `fit`'s first batch begin to the end of the first step, then per step."""

    def __init__(self):
        super().__init__()
        self.first_step_s, self.step_s = None, []
        self._last = None

    def on_train_batch_begin(self, batch, logs=None):
        if self._last is None:
            self._last = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        if self.first_step_s is None:
            self.first_step_s = now - self._last
        else:
            self.step_s.append(now - self._last)
        self._last = now


def bench_config(method: str, backbone: str, size: int, channels: int, batch_size: int,
                 precision: str = "float32") -> TrainConfig:
    """The method's recipe for a Fashion-MNIST-like (1 channel) or CIFAR-10-like case."""
    dataset = "fashion_mnist" if channels == 1 else "cifar10"
    return TrainConfig.from_dict({"dataset": dataset, "method": method, "backbone": backbone,
                                  "image_size": size, "batch_size": batch_size,
                                  "precision": precision}).resolved()


def build_model(config: TrainConfig, images: np.ndarray, steps_per_epoch: int):
    """The compiled, built model of `config`, its state initialised on `images`, as
    `train_run` makes it."""
    model = build_method(config, images.shape[1:], NUM_CLUSTERS)
    model.compile(optimizer=make_optimizer(config, steps_per_epoch))
    model(images[:2])
    model.optimizer.build(model.trainable_variables)
    model.initialize_state(images)
    model.prepare_training(images, None)
    return model


def measure(method: str, backbone: str, size: int, channels: int, batch_size: int,
            precision: str = "float32", steps: int = 10, warmup: int = 3) -> dict:
    """One case's row: pairs/s, build and first-step seconds, peak RSS MiB and the logged
    loss terms."""
    config = bench_config(method, backbone, size, channels, batch_size, precision)
    keras.utils.set_random_seed(0)
    keras.mixed_precision.set_dtype_policy(precision)
    images = np.random.default_rng(0).integers(0, 256, (batch_size * 4, size, size, channels),
                                               dtype=np.uint8)
    total = 1 + warmup + steps
    try:
        with PeakRSS() as memory:
            start = time.perf_counter()
            model = build_model(config, images, total)
            build_s = time.perf_counter() - start
            data = np.concatenate([images] * (total // 4 + 1))
            feeder = EpochBatches(data, batch_size, make_batch=lambda indices, rng:
                                  model.training_batch(images, indices % len(images), rng))
            timer = StepTimes()
            history = model.fit(((batch,) for batch in feeder), steps_per_epoch=total,
                                epochs=1, verbose=0, callbacks=[timer], shuffle=False)
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    timed = timer.step_s[warmup:]
    return {"backend": keras.backend.backend(), "method": method, "backbone": backbone,
            "input": f"{size}x{size}x{channels}", "batch": batch_size, "precision": precision,
            "pairs_per_s": batch_size / statistics.median(timed), "build_s": build_s,
            "first_step_s": timer.first_step_s, "peak_rss_mib": memory.mib,
            "parameters": model.count_params(), "logged": sorted(history.history),
            "model": type(model).__name__}


def _case(text: str) -> tuple[str, int, int]:
    try:
        name, size, channels = text.split(":")
        return name, int(size), int(channels)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a case is BACKBONE:SIZE:CHANNELS (e.g. "
                                         f"resnet18:32:3), got {text!r}") from None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", default="mixem", choices=sorted(METHODS))
    parser.add_argument("--cases", type=_case, nargs="+",
                        default=[("convnet", 28, 1), ("resnet18", 32, 3)],
                        help="BACKBONE:SIZE:CHANNELS")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--precision", nargs="+", default=["float32"])
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--warmup", type=int, default=3,
                        help="steps after the first one that are not timed")
    parser.add_argument("--json", default=None, help="write the rows here")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.batch_size < 2:
        parser.error("--steps must be >= 1, --warmup >= 0 and --batch-size >= 2")
    rows = []
    for name, size, channels in args.cases:
        for precision in args.precision:
            row = measure(args.method, name, size, channels, args.batch_size, precision,
                          args.steps, args.warmup)
            rows.append(row)
            print(format_table([_printed(row)]), flush=True)
    print(format_table([_printed(row) for row in rows]))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"rows": rows}, handle, indent=1)


def _printed(row: dict) -> dict:
    shown = {k: v for k, v in row.items() if k not in ("logged", "model")}
    return {**shown, **{k: f"{shown[k]:.1f}" for k in ("pairs_per_s", "build_s", "first_step_s",
                                                       "peak_rss_mib")}}


if __name__ == "__main__":
    main()
