"""K-means on raw pixels: the reference every learned method must beat.

    python -m trainers.pixel_kmeans --dataset=fashion_mnist
    python -m trainers.pixel_kmeans --dataset=digits --train-on whole --evaluate-on all

    python -m trainers.pixel_kmeans --dataset=folder:photos --clusters 10

Fits K-means (K = the dataset's class count unless --clusters) on the training images of the
protocol, assigns the evaluation images to the nearest centre and prints ACC/NMI/ARI for raw and
L2-normalised pixels when the data has labels. With or without labels it then prints the
label-free scores (stability under a method's views, `--views`, separation, confidence) of
K-means on the pixels of a seeded sample of evaluation images: the "pixels" row a trained run
prints beside its read-outs, to compare without labels.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from mixem_tf import cluster
from mixem_tf.cli import ArgumentParser, run
from mixem_tf.data.registry import DATASET_NAMES


def pixel_kmeans(train, evaluation, *, num_clusters, normalize, settings, seed) -> dict:
    """Fits on `train` pixels, scores `evaluation`; returns metrics and seconds taken."""
    from mixem_tf.metrics import evaluate_clustering

    start = time.perf_counter()
    features = train.images.reshape(len(train), -1).astype(np.float32) / 255.0
    result = cluster.kmeans(
        features, num_clusters, settings=settings, normalize=normalize, seed=seed
    )
    eval_features = evaluation.images.reshape(len(evaluation), -1).astype(np.float32) / 255.0
    predicted = cluster.assign(eval_features, result.centroids, normalize=normalize)
    scores = evaluate_clustering(evaluation.labels, predicted)
    return {**scores, "seconds": time.perf_counter() - start}


def parse_args(argv):
    parser = ArgumentParser(prog="python -m trainers.pixel_kmeans", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="fashion_mnist",
                        help=", ".join(DATASET_NAMES))
    parser.add_argument("--data-dir", default=None, help="where the dataset's files are")
    parser.add_argument("--train-on", choices=["whole", "train"], default="whole")
    parser.add_argument("--evaluate-on", choices=["test", "all"], default="all")
    parser.add_argument("--clusters", type=int, default=None, help="K (default: class count)")
    parser.add_argument("--settings", choices=sorted(cluster.SETTINGS_BY_NAME), default="sklearn",
                        help="K-means budget: sklearn (n_init 10, max_iter 300) or official "
                             "(MIX'EM's n_init 50, max_iter 10)")
    parser.add_argument("--features", choices=["raw", "l2", "both"], default="both")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--views", default="mixem",
                        help="the method whose views (and resolution) the label-free scores use")
    parser.add_argument("--image-size", type=int, default=None,
                        help="resolution of folder: images (default 32, as trainers.fit)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    return parser.parse_args(argv)


def label_free_pixels(evaluation, *, num_clusters, views: str, seed: int,
                      image_size=None) -> dict:
    """The label-free scores of K-means on pixels (a run's pixels row, `assess_pixels`) on a
    seeded sample of `evaluation`, under method `views`' augmentation at the dataset's (or
    `image_size`) resolution."""
    from mixem_tf.assessment import assess_pixels
    from mixem_tf.methods import method_class

    config = method_class(views).augmentation(evaluation.name, image_size)
    entry = assess_pixels(evaluation.images, config, num_clusters, seed=seed)
    return {"images": entry["images"], **entry["label_free"]}


def main(argv=None) -> int:
    from mixem_tf.data import load_protocol
    from mixem_tf.methods import method_declaration
    from mixem_tf.quality import SCORE_NAMES
    from mixem_tf.report import format_table

    args = parse_args(argv)
    method_declaration(args.views)  # an unknown method is refused before any work
    folder = args.dataset.startswith("folder:")
    train, evaluation = load_protocol(
        args.dataset, train_on=args.train_on, evaluate_on=args.evaluate_on,
        data_dir=args.data_dir, image_size=(args.image_size or 32) if folder else None,
    )
    num_clusters = args.clusters or evaluation.num_classes
    if num_clusters is None:
        raise ValueError(f"{args.dataset} has no labels to count classes: pass --clusters K")
    rows = []
    if evaluation.labels is not None:
        print(f"K-means on {args.dataset} pixels: fit on {len(train)} images ({args.train_on}),"
              f" score {len(evaluation)} ({args.evaluate_on}), K={num_clusters}",
              file=sys.stderr)
        for normalize in {"raw": [False], "l2": [True], "both": [False, True]}[args.features]:
            scores = pixel_kmeans(train, evaluation, num_clusters=num_clusters,
                                  normalize=normalize, settings=cluster.SETTINGS_BY_NAME[args.settings],
                                  seed=args.seed)
            rows.append({"dataset": args.dataset, "train": args.train_on,
                         "evaluate": args.evaluate_on, "features": "l2" if normalize else "raw",
                         **scores})
        print(format_table(rows))
    else:
        print(f"{args.dataset} has no labels: label-free scores only", file=sys.stderr)
    label_free = label_free_pixels(evaluation, num_clusters=num_clusters, views=args.views,
                                   seed=args.seed, image_size=args.image_size if folder else None)
    print(f"label-free, K-means on the pixels of {label_free['images']} evaluation images under "
          f"{args.views}'s views (as a run's pixels row):")
    print(format_table([{"features": "raw", **label_free}], ["features", *SCORE_NAMES]))
    if args.json:
        args.json.write_text(json.dumps({"labelled": rows, "label_free": label_free}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
