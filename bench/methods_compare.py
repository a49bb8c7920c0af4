"""Methods (MIX'EM, cdec, ...) vs SimCLR + K-means vs K-means on pixels, at equal epochs, over
several seeds.

    python -m bench.methods_compare --dataset digits --epochs 40 --seeds 0 1 2
    python -m bench.methods_compare --dataset digits --epochs 60 --methods cdec mixem simclr
    python -m bench.methods_compare --dataset fashion_mnist --epochs 3 \\
        --set image_size=16 --set backbone_width=16 --runs-dir bench/results/fmnist-runs

Every method trains `trainers.fit`'s recipe on the "whole" protocol and is scored on all
images; every read-out is reported as mean ± std over the seeds, with wall time and training
pairs/s, and each method's default read-out is paired seed by seed with SimCLR's read-outs.
`--set KEY=VALUE` changes a `TrainConfig` field or method option for every method it applies to
(VALUE is JSON, else a string), `--set METHOD:KEY=VALUE` for that method only (a MIX'EM variant
then reuses SimCLR's runs);
`{seed}` in a text VALUE becomes each run's seed (`--set
mixem:init_from=bench/results/digits100-runs/simclr-s{seed}` starts every seed from its own run).
With `--runs-dir`, each (method, seed) run is kept there and a finished one is reused when the
bench is run again with the same settings, so an interrupted bench loses at most one run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from bench.memory import PeakRSS
from mixem_tf import cluster
from mixem_tf.data import load_protocol
from mixem_tf.methods import METHODS
from mixem_tf.settings import TrainConfig
from mixem_tf.report import format_table
from mixem_tf.training import check_init_from, train_run
from trainers.pixel_kmeans import pixel_kmeans

METRICS = ("acc", "nmi", "ari")
BASELINE = "simclr"
TRAIN_FIELDS = {field.name for field in dataclasses.fields(TrainConfig)}
OPTION_FIELDS = {name: {m for m, cls in METHODS.items() if name in cls.Options.fields()}
                 for cls in METHODS.values() for name in cls.Options.fields()}


def _setting(text):
    """`[METHOD:]KEY=VALUE` as (method or None, key, value); VALUE is JSON, else a string."""
    target, value_sep, value = text.partition("=")
    if not value_sep:
        raise argparse.ArgumentTypeError(f"--set needs [METHOD:]KEY=VALUE, got {text!r}")
    method, method_sep, key = target.rpartition(":")
    if method_sep and method not in METHODS:
        raise argparse.ArgumentTypeError(
            f"--set {text!r}: unknown method {method!r} (known: {', '.join(sorted(METHODS))})")
    if key not in TRAIN_FIELDS and key not in OPTION_FIELDS:
        raise argparse.ArgumentTypeError(f"--set {text!r}: {key!r} is not a TrainConfig field "
                                         "or a method's option")
    try:
        value = json.loads(value)
    except json.JSONDecodeError:
        pass
    return method or None, key, value


def settings_for(method, settings) -> dict:
    """The `--set` settings that apply to `method`: its own, and the unscoped ones that are
    shared fields or its options."""
    return {key: value for scope, key, value in settings
            if scope == method or (scope is None and (key in TRAIN_FIELDS
                                                      or method in OPTION_FIELDS[key]))}


def for_seed(settings: dict, seed: int) -> dict:
    """`settings` with `{seed}` in every text value replaced by `seed`."""
    return {key: value.replace("{seed}", str(seed)) if isinstance(value, str) else value
            for key, value in settings.items()}


def _train(config, run_dir):
    """(read-out rows, wall seconds, median training pairs/s, peak RSS MiB) of one run,
    reusing a finished identical run in run_dir."""
    record = run_dir / "bench.json" if run_dir else None
    if record and record.is_file():
        saved = json.loads(record.read_text())
        if saved["settings"] == config.to_dict():
            print(f"reusing {run_dir}", flush=True)
            return (saved["readouts"], saved["wall_s"], saved.get("pairs_per_s"),
                    saved.get("peak_rss_mib"))
    start = time.perf_counter()
    with PeakRSS() as memory:
        if run_dir:
            result = train_run(config, run_dir, overwrite=True, verbose=2, readouts="paper")
        else:
            with tempfile.TemporaryDirectory() as out:
                result = train_run(config, out, verbose=2, readouts="paper")
    wall = time.perf_counter() - start
    rate = float(np.median(result.images_per_s)) if result.images_per_s else None
    readouts = [readout.row for readout in result.readouts]
    if record:
        record.write_text(json.dumps({"settings": config.to_dict(), "readouts": readouts,
                                      "wall_s": wall, "pairs_per_s": rate,
                                      "peak_rss_mib": memory.mib}, default=float, indent=1))
    return readouts, wall, rate, memory.mib


def _readout_name(row) -> str:
    return f"{row['clustering']} {row['feature']} {'l2' if row['normalize'] else 'raw'}"


def _default_name(method) -> str:
    """The read-out the *current* code marks as the method's default (a reused run may have
    been scored when another one was)."""
    return _readout_name(METHODS[method].default_readout)


def run_configs(dataset, method, epochs, seeds, settings) -> dict:
    """{seed: resolved TrainConfig}; ValueError names a bad setting or `init_from` run."""
    configs = {}
    for seed in seeds:
        config = TrainConfig.from_dict({
            "dataset": dataset, "method": method, "epochs": epochs, "seed": seed,
            "evaluate_on": "all", "train_on": "whole", **for_seed(settings, seed)}).resolved()
        if config.init_from:
            check_init_from(config.init_from)
        configs[seed] = config
    return configs


def _runs(method, configs, runs_dir):
    """{seed: {read-out name: {metric: value}}}, and the wall seconds, pairs/s and peak RSS MiB
    of each run."""
    per_seed, walls, rates, peaks = {}, [], [], []
    for seed, config in configs.items():
        run_dir = Path(runs_dir) / f"{method}-s{seed}" if runs_dir else None
        readouts, wall, rate, peak = _train(config, run_dir)
        walls.append(wall)
        rates.append(rate)
        peaks.append(peak)
        per_seed[seed] = {_readout_name(row): {m: row[m] for m in METRICS} for row in readouts}
    return per_seed, walls, rates, peaks


def _mean_std(values):
    return f"{np.mean(values):.4f} ± {np.std(values):.4f}"


def summary_rows(method, per_seed, walls, rates=(), peaks=()) -> list[dict]:
    """One row per read-out: mean ± std over the seeds; `*` marks the method's default; peak
    RSS is the largest of the runs' (the process's, so it includes the loaded dataset)."""
    default = _default_name(method)
    known = [rate for rate in rates if rate]
    pairs = f"{np.mean(known):.0f}" if known else ""
    measured = [peak for peak in peaks if peak]
    peak = f"{max(measured):.0f}" if measured else ""
    names = sorted({name for scores in per_seed.values() for name in scores})
    return [{"method": method + (" *" if name == default else ""), "read-out": name,
             **{m: _mean_std([scores[name][m] for scores in per_seed.values()])
                for m in METRICS},
             "wall s": f"{np.mean(walls):.0f}", "pairs/s": pairs, "peak RSS MiB": peak}
            for name in names]


def paired_rows(method, per_seed, baseline, baseline_per_seed) -> list[dict]:
    """`method`'s default read-out minus each baseline read-out, seed by seed.

    Each row: the mean ± std of the per-seed differences and on how many seeds the method
    scored higher. Against every baseline read-out, not only its default, so a win over a
    weaker read-out cannot pass for a win over the baseline's best.
    """
    seeds = sorted(set(per_seed) & set(baseline_per_seed))
    mine, baseline_default = _default_name(method), _default_name(baseline)
    names = sorted({n for s in seeds for n in baseline_per_seed[s]})
    rows = []
    for name in names:
        row = {"comparison": f"{method} {mine} - {baseline} {name}"
                             + (" *" if name == baseline_default else "")}
        for metric in METRICS:
            diff = [per_seed[s][mine][metric] - baseline_per_seed[s][name][metric]
                    for s in seeds]
            wins = sum(d > 0 for d in diff)
            row[metric] = f"{np.mean(diff):+.4f} ± {np.std(diff):.4f} ({wins}/{len(diff)})"
        rows.append(row)
    return rows


def _pixel_row(dataset, seeds):
    train, evaluation = load_protocol(dataset, train_on="whole", evaluate_on="all")
    pixel = defaultdict(list)
    for seed in seeds:
        for metric, value in pixel_kmeans(train, evaluation, num_clusters=evaluation.num_classes,
                                          normalize=False, settings=cluster.SKLEARN,
                                          seed=seed).items():
            pixel[metric].append(value)
    return {"method": "pixels", "read-out": "raw K-means",
            **{m: _mean_std(pixel[m]) for m in METRICS},
            "wall s": f"{np.mean(pixel['seconds']):.0f}"}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=["mixem", "simclr"],
                        choices=sorted(METHODS))
    parser.add_argument("--set", dest="settings", type=_setting, action="append", default=[],
                        help="[METHOD:]KEY=VALUE: a TrainConfig field for both methods, or one; "
                             "{seed} in VALUE becomes each run's seed")
    parser.add_argument("--runs-dir", default=None, help="keep (and reuse) the runs here")
    parser.add_argument("--no-pixels", action="store_true", help="skip the pixel baseline")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    settings = {method: settings_for(method, args.settings) for method in args.methods}
    try:  # every run's settings are checked before the first one starts
        configs = {method: run_configs(args.dataset, method, args.epochs, args.seeds,
                                       settings[method]) for method in args.methods}
    except ValueError as error:
        parser.error(str(error))
    rows = [] if args.no_pixels else [_pixel_row(args.dataset, args.seeds)]
    results = {}
    for method in args.methods:
        per_seed, walls, rates, peaks = _runs(method, configs[method], args.runs_dir)
        results[method] = {"per_seed": per_seed, "wall_s": walls, "pairs_per_s": rates,
                           "peak_rss_mib": peaks}
        rows += summary_rows(method, per_seed, walls, rates, peaks)
    print(f"{args.dataset}: {args.epochs} epochs, seeds {args.seeds}, settings {settings} "
          "(* = default read-out)")
    print(format_table(rows))
    paired = []
    for method in [m for m in results if m != BASELINE and BASELINE in results]:
        paired += paired_rows(method, results[method]["per_seed"],
                              BASELINE, results[BASELINE]["per_seed"])
    if paired:
        print("\nper-seed differences, mean ± std (seeds where the method is higher / seeds):")
        print(format_table(paired))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"dataset": args.dataset, "epochs": args.epochs, "seeds": args.seeds,
                       "settings": settings, "rows": rows, "paired": paired,
                       "runs": results}, handle, indent=2)


if __name__ == "__main__":
    main()
