"""Re-cluster a trained run at another K, or choose K without labels, without retraining.

    python -m trainers.recluster --run runs/x --clusters 15
    python -m trainers.recluster --run runs/x --clusters auto --default
    python -m trainers.recluster --run runs/x --clusters 2..30 --readout h/l2/kmeans

`--clusters K` fits the run's read-outs (every one that can be refitted at K; or the one named
by `--readout FEATURE/l2|raw/KIND`) at K on the run's evaluation features and adds them to the
run as `NAME@K` (metrics.json keeps every row, readout.npz every fitted read-out). The default
read-out's kind and feature are fitted at the run's K-means budget, the others at a smaller one.

`--clusters auto` (K from 2 to 20) or `A..B` measures every label-free criterion of
`mixem_tf.choosing_k` for each K on the default read-out's feature (or `--readout`'s), prints
the table with each criterion's choice marked (and ACC/NMI per K as a check where the data has
labels), fits the chosen K and keeps the table in metrics.json under "k_choice".

`--default` makes the new read-out the run's default, so `export.savedmodel` and
`trainers.review` use it; `export.savedmodel --readout NAME` exports any stored one.
Checkpoints are never touched. The evaluation features are computed once per checkpoint and
kept in the run (`features/`), so the first call runs the network and later ones take seconds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mixem_tf.cli import ArgumentParser, run

CRITERION_NAMES = ("silhouette", "prediction_strength", "eigengap", "stability")


def parse_args(argv=None):
    parser = ArgumentParser(prog="python -m trainers.recluster", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="trained run directory")
    parser.add_argument("--clusters", required=True, metavar="K|auto|A..B",
                        help="a number of clusters, or 'auto' / a range to choose K without "
                             "labels")
    parser.add_argument("--readout", default=None, metavar="FEATURE/l2|raw/KIND",
                        help="the read-out to refit (default: every refittable one for K; the "
                             "default read-out's feature for auto)")
    parser.add_argument("--criterion", default=None, choices=CRITERION_NAMES,
                        help="the criterion that chooses K with auto (default: eigengap, "
                             "the best measured; see docs/BENCHMARKS.md, 'Choosing K')")
    parser.add_argument("--default", action="store_true",
                        help="make the new read-out the run's default")
    parser.add_argument("--quiet", action="store_true", help="print only the result table")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from mixem_tf.choosing_k import parse_clusters
    from mixem_tf.reclustering import plan, recluster
    from mixem_tf.report import format_table, readout_report

    from mixem_tf.runlock import run_lock

    request = plan(args.run, parse_clusters(args.clusters), readout=args.readout,
                   criterion=args.criterion)
    with run_lock(args.run, create=False, flag="--run"):  # it writes the run's read-outs
        result = recluster(request, make_default=args.default, verbose=not args.quiet)
    if result.choice is not None:
        print(choice_table(result.choice, format_table))
        print(f"chosen: K = {result.choice.k} by {result.choice.criterion} (measured on "
              f"{result.choice.images} images; < marks each criterion's choice)")
    print(readout_report(result.readouts))
    note = (f"; {result.default} is now the run's default read-out" if result.default else
            "; make one the default with --default, or export it with export.savedmodel "
            f"--readout {result.readouts[0].name}")
    print(f"added {len(result.readouts)} read-out(s) to {args.run}{note}")
    return 0


def choice_table(choice, format_table) -> str:
    """K against every criterion, each criterion's choice marked with <, the one used with *."""
    shown = []
    for row in choice.table:
        marks = [name for name, k in choice.chosen.items() if k == row["K"]]
        cells = {key: ("" if value is None else value) for key, value in row.items()}
        for name in marks:
            cells[name] = f"{row[name]:.4f}{'*' if name == choice.criterion else '<'}"
        shown.append(cells)
    return format_table(shown, list(choice.table[0]))


if __name__ == "__main__":
    sys.exit(run(main))
