"""Tune a method's settings without labels: a keras-tuner study over its search space.

    python -m trainers.tune --dataset=digits --method=mixem --max-trials 12 --epochs 20 \\
        --out tunes/digits-mixem
    python -m trainers.tune ... same command ...      # continues a stopped study
    python -m trainers.fit --config tunes/digits-mixem/best_config.json --out runs/best

Each trial is a run directory (OUT/trials/NNN) trained with the same settings as
`trainers.fit` (recipe, --config, flags) and the trial's values of the method's search space
(its `search_space`, changed by --space FILE: {"setting": {"min", "max", "sampling"} or
{"values": [...]}, or null to leave a setting alone}). A setting given as a flag or in
--config is fixed and not tuned. The objective is computed from the images and the trained
model only; labels, where the dataset has them, are shown beside it and never read by it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mixem_tf.cli import ArgumentParser, run
from mixem_tf.methods import METHODS
from mixem_tf.tuning.objectives import OBJECTIVES
from trainers.fit import FLAGS, OPTION_FLAGS, config_from_args

TUNERS = {"random": "RandomSearch", "bayesian": "BayesianOptimization",
          "hyperband": "Hyperband (brackets of epochs up to --epochs; ignores --max-trials)"}


def parse_args(argv):
    parser = ArgumentParser(prog="python -m trainers.tune", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="the study folder")
    parser.add_argument("--objective", default=None, choices=list(OBJECTIVES),
                        help="label-free objective, maximised: " + "; ".join(
                            f"{k}: {v}" for k, v in OBJECTIVES.items())
                        + " (default: the method's; " + ", ".join(
                            f"{name} {cls.tuning_objective}" for name, cls in METHODS.items())
                        + ")")
    parser.add_argument("--tuner", default="random", choices=list(TUNERS),
                        help="; ".join(f"{k}: {v}" for k, v in TUNERS.items()))
    parser.add_argument("--max-trials", type=int, default=10, help="trials in all (default 10)")
    parser.add_argument("--space", type=Path, help="JSON file overriding the search space")
    parser.add_argument("--tuner-seed", type=int, default=0, help="the tuner's random seed")
    parser.add_argument("--max-consecutive-failures", type=int, default=3,
                        help="stop after this many failed trials in a row (default 3)")
    parser.add_argument("--overwrite", action="store_true", help="restart the study in --out")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    group = parser.add_argument_group("run settings, fixed for every trial (as trainers.fit)")
    for name, (kind, text) in {**FLAGS, **OPTION_FLAGS}.items():
        group.add_argument("--" + name.replace("_", "-"), dest=name, type=kind, default=None,
                           help=text)
    group.add_argument("--config", type=Path, help="JSON file of settings")
    return parser.parse_args(argv)


def trial_table(summary: dict, space: dict) -> str:
    """The trials as text: settings, status, objective, and ACC/NMI where labels exist."""
    from mixem_tf.report import format_table

    rows = []
    for record in summary["trials"]:
        row = {"trial": f"{record['trial']:03d}", **{k: _short(v)
                                                      for k, v in record["values"].items()},
               "objective": "failed" if record["objective"] is None
               else f"{record['objective']:.4f}"}
        row.update({k.upper(): f"{record[k]:.4f}" for k in ("acc", "nmi") if k in record})
        row["chosen"] = "*" if summary["chosen"] and record is summary["chosen"] else ""
        rows.append(row)
    labels = [k.upper() for k in ("acc", "nmi") if any(k in r for r in summary["trials"])]
    return format_table(rows, ["trial", *space, "objective", *labels, "chosen"])


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def main(argv=None) -> int:
    from mixem_tf.tuning.space import load_space_file, search_space
    from mixem_tf.tuning.study import Study

    args = parse_args(argv)
    config = config_from_args(args)
    config.resolved()  # every fixed setting is checked before anything runs
    overrides = load_space_file(args.space) if args.space else None
    space = search_space(config, overrides)
    study = Study(config, space, args.out, objective=args.objective, tuner=args.tuner,
                  max_trials=args.max_trials, seed=args.tuner_seed,
                  max_consecutive_failures=args.max_consecutive_failures,
                  verbose=not args.quiet)
    summary = study.run(overwrite=args.overwrite)
    print(trial_table(summary, space))
    chosen = summary["chosen"]
    if chosen is None:
        print("error: no trial finished; see the reasons above", file=sys.stderr)
        return 1
    labels = "".join(f", {k.upper()} {chosen[k]:.4f}" for k in ("acc", "nmi") if k in chosen)
    print(f"chosen: trial {chosen['trial']:03d} ({study.objective} {chosen['objective']:.4f}"
          f"{labels}); its settings: {args.out / 'best_config.json'} (python -m trainers.fit "
          f"--config {args.out / 'best_config.json'})")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
