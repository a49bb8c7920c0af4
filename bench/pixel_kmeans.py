"""K-means on raw pixels, side by side: digits and Fashion-MNIST, whole and test protocols.

    python -m bench.pixel_kmeans [--datasets digits fashion_mnist] [--settings sklearn official]

"whole": fit on train+test and score all of it (the published Fashion-MNIST K-means 47.4 ACC
is on all 70k); "test": fit on train+test, score the test split (MIX'EM's protocol). digits has
one split, so both protocols score all 1,797 images.
"""

from __future__ import annotations

import argparse
import json
import sys

from mixem_tf import cluster
from mixem_tf.data import load_protocol
from mixem_tf.report import format_table
from trainers.pixel_kmeans import pixel_kmeans

PROTOCOLS = {"whole": ("whole", "all"), "test": ("whole", "test")}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--datasets", nargs="+", default=["digits", "fashion_mnist"])
    parser.add_argument("--settings", nargs="+", default=["sklearn", "official"],
                        choices=["sklearn", "official"])
    parser.add_argument("--json", default=None, help="write the rows here too")
    args = parser.parse_args(argv)
    rows = []
    for dataset in args.datasets:
        for protocol, (train_on, evaluate_on) in PROTOCOLS.items():
            train, evaluation = load_protocol(dataset, train_on=train_on,
                                              evaluate_on=evaluate_on)
            for settings in args.settings:
                for normalize in (False, True):
                    scores = pixel_kmeans(train, evaluation, num_clusters=evaluation.num_classes,
                                          normalize=normalize, seed=0,
                                          settings=cluster.SETTINGS_BY_NAME[settings])
                    rows.append({"dataset": dataset, "protocol": protocol,
                                 "scored": len(evaluation), "kmeans": settings,
                                 "features": "l2" if normalize else "raw", **scores})
                    print(format_table(rows[-1:]), file=sys.stderr)
    print(format_table(rows))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=2)


if __name__ == "__main__":
    main()
