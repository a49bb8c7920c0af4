"""Training throughput of SimCLR in pairs/s (two views, forward and backward, augmentation in
the step), under the current KERAS_BACKEND.

    python -m bench.train_throughput                         # CPU: ConvNet 28x28, ResNet-18 32x32
    python -m bench.train_throughput --cases resnet18:32:3 --batch-size 512 \\
        --precision float32 mixed_bfloat16                   # the GPU comparison

Each case trains on random uint8 images for --steps steps after --warmup steps (compilation
excluded) and reports the median of per-epoch rates.
"""

from __future__ import annotations

import argparse
import statistics

import keras
import numpy as np

from mixem_tf.backbones import build_backbone
from mixem_tf.callbacks import Throughput
from mixem_tf.feeding import EpochBatches
from mixem_tf.methods import SimCLR
from mixem_tf.report import format_table


def measure(backbone_name, size, channels, batch_size, precision, steps, warmup, repeats):
    keras.mixed_precision.set_dtype_policy(precision)
    dataset = "fashion_mnist" if channels == 1 else "cifar10"
    model = SimCLR(build_backbone(backbone_name, (size, size, channels)),
                   SimCLR.augmentation(dataset, image_size=size), num_clusters=10)
    model.compile(optimizer=keras.optimizers.Adam(1e-4))
    images = np.random.default_rng(0).integers(0, 256, (batch_size * 4, size, size, channels),
                                               dtype=np.uint8)
    meter = Throughput(batch_size)
    epochs = repeats + 1
    per_epoch = max(steps, warmup)
    feeder = EpochBatches(np.concatenate([images] * (per_epoch // 4 + 1)), batch_size,
                          end_epoch=epochs)
    model.fit(((b,) for b in feeder), steps_per_epoch=per_epoch, epochs=epochs, verbose=0,
              callbacks=[meter], shuffle=False)
    keras.mixed_precision.set_dtype_policy("float32")
    return statistics.median(meter.per_epoch[1:])  # epoch 0 includes compilation


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=["convnet:28:1", "resnet18:32:3"],
                        help="backbone:size:channels")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--precision", nargs="+", default=["float32"])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    rows = []
    for case in args.cases:
        name, size, channels = case.split(":")
        for precision in args.precision:
            rate = measure(name, int(size), int(channels), args.batch_size, precision,
                           args.steps, args.warmup, args.repeats)
            rows.append({"backend": keras.backend.backend(), "backbone": name,
                         "input": f"{size}x{size}x{channels}", "batch": args.batch_size,
                         "precision": precision, "pairs/s": round(rate, 1)})
            print(format_table(rows[-1:]), flush=True)
    print(format_table(rows))


if __name__ == "__main__":
    main()
