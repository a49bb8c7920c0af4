"""SimCLR + K-means against K-means on raw pixels, at a stated epoch budget.

    python -m bench.simclr_vs_pixels --dataset digits --epochs 60
    python -m bench.simclr_vs_pixels --dataset fashion_mnist --epochs 15

Trains `trainers.fit`'s SimCLR recipe on the "whole" protocol (train+test, scored on all
images), then prints every read-out next to pixel K-means on the same images, with wall time
and training images (pairs of views) per second.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

from mixem_tf import cluster
from mixem_tf.data import load_protocol
from mixem_tf.settings import TrainConfig
from mixem_tf.report import format_table
from mixem_tf.training import train_run
from trainers.pixel_kmeans import pixel_kmeans


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    train, evaluation = load_protocol(args.dataset, train_on="whole", evaluate_on="all")
    pixels = pixel_kmeans(train, evaluation, num_clusters=evaluation.num_classes,
                          normalize=False, settings=cluster.SKLEARN, seed=args.seed)
    config = TrainConfig(dataset=args.dataset, method="simclr", epochs=args.epochs,
                         batch_size=args.batch_size, seed=args.seed, evaluate_on="all")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        result = train_run(config, out, verbose=2, readouts="paper")
    wall = time.perf_counter() - start
    rate = sum(result.images_per_s) / max(1, len(result.images_per_s))
    rows = [{"method": "pixels + K-means", "read-out": "raw pixels", **pixels}]
    for row in (readout.row for readout in result.readouts):
        rows.append({"method": "SimCLR + K-means" + (" (default)" if row["default"] else ""),
                     "read-out": f"{row['feature']} {'l2' if row['normalize'] else 'raw'}",
                     "acc": row["acc"], "nmi": row["nmi"], "ari": row["ari"], "seconds": wall})
    print(f"{args.dataset}: {len(train)} images, {result.config.epochs} epochs, batch "
          f"{result.config.batch_size}, backbone {result.config.backbone}, "
          f"{rate:.0f} pairs/s, {wall:.0f} s")
    print(format_table(rows, ["method", "read-out", "acc", "nmi", "ari", "seconds"]))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"config": result.config.to_dict(), "pairs_per_s": rate,
                       "wall_s": wall, "rows": rows}, handle, indent=2)


if __name__ == "__main__":
    main()
