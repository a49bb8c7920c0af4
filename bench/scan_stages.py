"""SCAN's stages after a pretext run, against the pretext's best read-out and pixel K-means.

    python -m bench.scan_stages --dataset digits --seeds 0 1 2 --source-epochs 30 \\
        --scan-epochs 10 --selflabel-epochs 10 --runs-dir bench/results/scan-digits
    python -m bench.scan_stages --dataset folder:bench/results/fmnist-10k --seeds 0 1 2 \\
        --set image_size=16 --set backbone_width=16 --source-epochs 10 --scan-epochs 5 \\
        --selflabel-epochs 5 --runs-dir bench/results/scan-fmnist10k

Per seed: the source method's run (default SimCLR), `scan` started from it, `selflabel` started
from the scan run, each trained and scored on the whole data (`methods_compare`'s protocol).
Prints every stage's read-outs as mean ± std over the seeds with wall time and peak RSS (of
this process while the stage ran: the loaded data and earlier stages included), pixel K-means,
and seed-paired differences of each stage's default read-out against the source's best
read-out (the row of highest mean ACC, picked with labels: a bar no user could pick without
them). `--set [METHOD:]KEY=VALUE` as in `bench.methods_compare`; with `--runs-dir` finished
runs are reused.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from bench.methods_compare import (METRICS, _default_name, _mean_std, _runs, _setting,
                                   run_configs, settings_for)
from mixem_tf import cluster
from mixem_tf.cli import run
from mixem_tf.data import load_protocol
from mixem_tf.methods import METHODS
from mixem_tf.report import format_table
from trainers.pixel_kmeans import pixel_kmeans

STAGES = ("scan", "selflabel")


def stage_tables(dataset, seeds, source, epochs: dict, settings, runs_dir):
    """{stage: (per_seed scores, walls, peaks)} for the source method, scan and selflabel; each
    seed's whole chain runs before the next seed's."""
    results = {stage: ({}, [], []) for stage in (source, *STAGES)}
    for seed in seeds:
        previous = None
        for stage in results:
            scoped = settings_for(stage, settings)
            if previous is not None:
                scoped["init_from"] = str(Path(runs_dir) / f"{previous}-s{{seed}}")
            configs = run_configs(dataset, stage, epochs[stage], [seed], scoped)
            per_seed, walls, _, peaks = _runs(stage, configs, runs_dir)
            results[stage][0].update(per_seed)
            results[stage][1].extend(walls)
            results[stage][2].extend(peaks)
            previous = stage
    return results


def _pixels(dataset, seeds, image_size):
    train, evaluation = load_protocol(dataset, train_on="whole", evaluate_on="all",
                                      image_size=image_size)
    scores = [pixel_kmeans(train, evaluation, num_clusters=evaluation.num_classes,
                           normalize=False, settings=cluster.SKLEARN, seed=seed)
              for seed in seeds]
    return {"stage": "pixels", "read-out": "raw K-means",
            **{m: _mean_std([s[m] for s in scores]) for m in METRICS},
            "wall s": f"{np.mean([s['seconds'] for s in scores]):.0f}", "peak RSS MiB": ""}


def summary(results) -> list[dict]:
    rows = []
    for stage, (per_seed, walls, peaks) in results.items():
        names = sorted({name for scores in per_seed.values() for name in scores})
        for name in names:
            rows.append({"stage": stage + (" *" if name == _default_name(stage) else ""),
                         "read-out": name,
                         **{m: _mean_std([s[name][m] for s in per_seed.values()])
                            for m in METRICS},
                         "wall s": f"{np.mean(walls):.0f}",
                         "peak RSS MiB": f"{max(peaks):.0f}"})
    return rows


def best_readout(per_seed) -> str:
    """The read-out of highest mean ACC over the seeds."""
    names = sorted({name for scores in per_seed.values() for name in scores})
    return max(names, key=lambda n: np.mean([s[n]["acc"] for s in per_seed.values()]))


def paired(results, source) -> list[dict]:
    """Each stage's default read-out minus the source's best, seed by seed (wins/seeds)."""
    base = results[source][0]
    best = best_readout(base)
    rows = []
    for stage in STAGES:
        per_seed = results[stage][0]
        row = {"comparison": f"{stage} {_default_name(stage)} - {source} {best}"}
        for metric in METRICS:
            diff = [per_seed[s][_default_name(stage)][metric] - base[s][best][metric]
                    for s in per_seed]
            row[metric] = (f"{np.mean(diff):+.4f} ± {np.std(diff):.4f} "
                           f"({sum(d > 0 for d in diff)}/{len(diff)})")
        rows.append(row)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scan_stages", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--source", default="simclr", choices=sorted(set(METHODS) - set(STAGES)))
    parser.add_argument("--source-epochs", type=int, default=30)
    parser.add_argument("--scan-epochs", type=int, default=10)
    parser.add_argument("--selflabel-epochs", type=int, default=10)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", type=_setting, action="append", default=[], dest="settings",
                        metavar="[METHOD:]KEY=VALUE")
    parser.add_argument("--runs-dir", type=Path, required=True,
                        help="where each stage's run per seed is kept (the next stage starts "
                             "from it)")
    parser.add_argument("--no-pixels", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the tables here")
    args = parser.parse_args(argv)
    epochs = {args.source: args.source_epochs, "scan": args.scan_epochs,
              "selflabel": args.selflabel_epochs}
    results = stage_tables(args.dataset, args.seeds, args.source, epochs, args.settings,
                           args.runs_dir)
    rows = summary(results)
    if not args.no_pixels:
        size = dict((k, v) for _, k, v in args.settings).get("image_size")
        rows.insert(0, _pixels(args.dataset, args.seeds, size))
    columns = ["stage", "read-out", *METRICS, "wall s", "peak RSS MiB"]
    print(format_table(rows, columns))
    comparisons = paired(results, args.source)
    print(format_table(comparisons, ["comparison", *METRICS]))
    if args.json:
        args.json.write_text(json.dumps({"summary": rows, "paired": comparisons}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(run(main))
