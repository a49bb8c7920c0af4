"""How well each label-free objective of `trainers.tune` ranks trials, measured with labels.

    KERAS_BACKEND=jax python -m bench.tune_objectives --dataset digits --method mixem \\
        --trials 16 --epochs 10 --out bench/results/tune-digits-mixem

Runs one RandomSearch study (`mixem_tf.tuning.study`, its first trial at the recipe's values)
and reports, over the finished trials: the Spearman correlation of each objective with ACC,
the ACC of the trial each objective picks, the best trial's ACC and the recipe default's (trial
000). A stopped bench continues its study when rerun with the same command (`--report`
measures the finished trials without running more). `--set KEY=VALUE` fixes a setting for
every trial (VALUE is JSON, else a string).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from scipy.stats import spearmanr

from mixem_tf.settings import TrainConfig
from mixem_tf.report import format_table
from mixem_tf.tuning.objectives import OBJECTIVES
from mixem_tf.tuning.space import search_space
from mixem_tf.tuning.study import Study


def _value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def measure(summary: dict) -> dict:
    """Spearman ρ of each objective with ACC, and each objective's pick, over the trials."""
    done = [r for r in summary["trials"] if r["status"] == "completed"]
    default = next((r for r in done if r["trial"] == 0), None)
    result = {"trials": len(summary["trials"]), "completed": len(done),
              "best_acc": max(r["acc"] for r in done),
              "default_acc": default["acc"] if default else None, "objectives": {}}
    for name in OBJECTIVES:
        values = [r["objectives"][name] for r in done]
        rho = spearmanr(values, [r["acc"] for r in done]).statistic if len(done) > 2 else None
        pick = max(done, key=lambda r: r["objectives"][name])
        result["objectives"][name] = {"spearman": float(rho), "pick_trial": pick["trial"],
                                      "pick_acc": pick["acc"]}
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--method", default="mixem")
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, required=True, help="the study folder")
    parser.add_argument("--json", type=Path, help="write the measurements here")
    parser.add_argument("--report", action="store_true",
                        help="measure the trials finished so far without running more")
    args = parser.parse_args(argv)
    settings = {"dataset": args.dataset, "method": args.method, "epochs": args.epochs}
    for item in args.set:
        key, _, text = item.partition("=")
        settings[key] = _value(text)
    config = TrainConfig.from_dict(settings)
    study = Study(config, search_space(config), args.out, objective="stability",
                  max_trials=args.trials, max_consecutive_failures=args.trials)
    result = measure(study.summary() if args.report else study.run())
    rows = [{"objective": name, "spearman vs ACC": m["spearman"], "pick": m["pick_trial"],
             "ACC of pick": m["pick_acc"], "best ACC": result["best_acc"],
             "default ACC": result["default_acc"]}
            for name, m in result["objectives"].items()]
    print(f"{args.dataset} {args.method}: {result['completed']}/{result['trials']} trials "
          "finished")
    print(format_table(rows))
    if args.json:
        args.json.write_text(json.dumps({"settings": settings, **result}, indent=2))


if __name__ == "__main__":
    main()
