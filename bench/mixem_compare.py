"""MIX'EM vs SimCLR + K-means vs K-means on pixels, at equal epochs, over several seeds.

    python -m bench.mixem_compare --dataset digits --epochs 40 --seeds 0 1 2
    python -m bench.mixem_compare --dataset fashion_mnist --epochs 10 --seeds 0 1 2

Both methods train `trainers.fit`'s recipe on the "whole" protocol and are scored on all
images; every read-out is reported as mean ± std over the seeds, with wall time.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import defaultdict

import numpy as np

from mixem_tf import cluster
from mixem_tf.data import load_protocol
from mixem_tf.recipes import TrainConfig
from mixem_tf.report import format_table
from mixem_tf.training import train_run
from trainers.pixel_kmeans import pixel_kmeans


def _runs(dataset, method, epochs, seeds, batch_size):
    scores, walls = defaultdict(list), []
    for seed in seeds:
        config = TrainConfig(dataset=dataset, method=method, epochs=epochs, seed=seed,
                             batch_size=batch_size, evaluate_on="all")
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as out:
            result = train_run(config, out, verbose=2)
        walls.append(time.perf_counter() - start)
        for row in result.readouts:
            key = (row["feature"], "l2" if row["normalize"] else "raw", row["clustering"],
                   row["default"])
            for metric in ("acc", "nmi", "ari"):
                scores[key + (metric,)].append(row[metric])
    return scores, walls


def _mean_std(values):
    return f"{np.mean(values):.4f} ± {np.std(values):.4f}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--methods", nargs="+", default=["mixem", "simclr"])
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    train, evaluation = load_protocol(args.dataset, train_on="whole", evaluate_on="all")
    rows = []
    pixel = defaultdict(list)
    for seed in args.seeds:
        for metric, value in pixel_kmeans(train, evaluation, num_clusters=evaluation.num_classes,
                                          normalize=False, settings=cluster.SKLEARN,
                                          seed=seed).items():
            pixel[metric].append(value)
    rows.append({"method": "pixels", "read-out": "raw K-means", "acc": _mean_std(pixel["acc"]),
                 "nmi": _mean_std(pixel["nmi"]), "ari": _mean_std(pixel["ari"]),
                 "wall s": f"{np.mean(pixel['seconds']):.0f}"})
    for method in args.methods:
        scores, walls = _runs(args.dataset, method, args.epochs, args.seeds, args.batch_size)
        readouts = sorted({key[:4] for key in scores})
        for feature, norm, clustering, default in readouts:
            rows.append({"method": method + (" *" if default else ""),
                         "read-out": f"{clustering} {feature} {norm}",
                         **{m: _mean_std(scores[(feature, norm, clustering, default, m)])
                            for m in ("acc", "nmi", "ari")},
                         "wall s": f"{np.mean(walls):.0f}"})
    print(f"{args.dataset}: {args.epochs} epochs, seeds {args.seeds} (* = default read-out)")
    print(format_table(rows))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"dataset": args.dataset, "epochs": args.epochs, "seeds": args.seeds,
                       "rows": rows}, handle, indent=2)


if __name__ == "__main__":
    main()
