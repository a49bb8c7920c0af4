"""Choosing K without labels: each criterion's K against the true K on five cases, with ACC/NMI
at the chosen and at the true K, and the time of a recluster against the training it replaces.

    python -m bench.choosing_k --out bench/results/choosing_k --seeds 0 1

Cases (SimCLR, the ConvNet at width 16; each run is trained once and reused):

| case | data | true K |
| --- | --- | ---: |
| digits | scikit-learn's digits, 40 epochs | 10 |
| fashion_mnist | 70,000 images at 16 px, 3 epochs | 10 |
| fmnist-3 | a `folder:` of 3 Fashion-MNIST classes, 1,000 images each, 30 epochs | 3 |
| fmnist-6-unequal | 6 classes of 3,000 / 1,500 / 700 / 400 / 200 / 100 images, 30 epochs | 6 |
| folder-2000 | 2,000 RGB images of mixed sizes, formats and nested folders (bench.fmnist_folder), 30 epochs at 32 px | 10 |

K is chosen from 2 to 20 on the run's default read-out (K-means on L2-normalised h). Two
recluster times: `--clusters 2..20` once the run's features are kept (the first also embeds
one augmented view per image; both are printed), which replaces 19 trainings, and
`--clusters TRUE_K`, which replaces one. results.json keeps every case run so far; a case run
again replaces its row.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from bench.fmnist_folder import make_folder

COMMON = {"method": "simclr", "backbone": "convnet", "backbone_width": 16}
CASES = {
    "digits": ({"dataset": "digits", "epochs": 40}, None),
    "fashion_mnist": ({"dataset": "fashion_mnist", "epochs": 3, "image_size": 16}, None),
    "fmnist-3": ({"epochs": 30, "image_size": 28, "lr": 1e-3},
                 {"counts": [1000, 1000, 1000], "grey": True}),
    "fmnist-6-unequal": ({"epochs": 30, "image_size": 28, "lr": 1e-3},
                         {"counts": [3000, 1500, 700, 400, 200, 100], "grey": True}),
    "folder-2000": ({"epochs": 30, "image_size": 32, "lr": 1e-3}, {"images": 2000}),
}
TRUE_K = {"digits": 10, "fashion_mnist": 10, "fmnist-3": 3, "fmnist-6-unequal": 6,
          "folder-2000": 10}
RANGE = (2, 20)


def run_case(name: str, seed: int, out: Path) -> dict:
    from mixem_tf.choosing_k import CRITERIA
    from mixem_tf.reclustering import plan, recluster
    from mixem_tf.settings import TrainConfig
    from mixem_tf.training import train_run

    settings, folder = CASES[name]
    settings = {**COMMON, **settings, "seed": seed}
    if folder is not None:
        settings["dataset"] = "folder:" + str(make_folder(out / "data" / name, **folder).resolve())
    run_dir = out / f"{name}-s{seed}"
    record = run_dir / "bench.json"
    if record.is_file():
        train_s = json.loads(record.read_text())["train_s"]
    else:
        start = time.perf_counter()
        train_run(TrainConfig.from_dict(settings), run_dir, overwrite=True, verbose=0,
                  readouts="default")
        train_s = time.perf_counter() - start
        record.write_text(json.dumps({"train_s": train_s}))
    times = []
    for _ in range(2):  # the first embeds the augmented view if it is not kept yet
        start = time.perf_counter()
        result = recluster(plan(run_dir, RANGE), verbose=False)
        times.append(time.perf_counter() - start)
    table = {row["K"]: row for row in result.choice.table}
    true_k = TRUE_K[name]
    start = time.perf_counter()  # one K: what replaces one retraining
    recluster(plan(run_dir, true_k), verbose=False)
    one_k_s = time.perf_counter() - start
    return {"case": name, "seed": seed, "true_k": true_k,
            "chosen": result.choice.chosen,
            "acc_nmi": {criterion: (table[k]["acc"], table[k]["nmi"])
                        for criterion, k in result.choice.chosen.items()},
            "at_true_k": (table[true_k]["acc"], table[true_k]["nmi"]),
            "train_s": train_s, "recluster_first_s": times[0], "recluster_s": times[1],
            "recluster_one_k_s": one_k_s,
            "criteria": list(CRITERIA)}


def summary(results: list[dict]) -> str:
    from mixem_tf.choosing_k import CRITERIA
    from mixem_tf.report import format_table

    rows = []
    for r in results:
        row = {"case": f"{r['case']} s{r['seed']}", "true K": r["true_k"]}
        for criterion in CRITERIA:
            k = r["chosen"].get(criterion)
            acc, nmi = r["acc_nmi"].get(criterion, (None, None))
            row[criterion] = "" if k is None else f"{k} ({acc:.2f}/{nmi:.2f})"
        row["at true K"] = f"{r['at_true_k'][0]:.2f}/{r['at_true_k'][1]:.2f}"
        row["train s"] = f"{r['train_s']:.0f}"
        row["auto s"] = f"{r['recluster_s']:.1f} ({r['recluster_first_s']:.0f} first)"
        one_k = r.get("recluster_one_k_s")
        row["one K s"] = "" if one_k is None else f"{one_k:.1f}"
        row["one K cheaper"] = "" if one_k is None else f"{r['train_s'] / one_k:.0f}x"
        trainings = RANGE[1] - RANGE[0] + 1
        row["auto cheaper"] = f"{trainings * r['train_s'] / r['recluster_s']:.0f}x"
        rows.append(row)
    hits = {criterion: sum(abs(r["chosen"][criterion] - r["true_k"]) <= 1 for r in results
                           if criterion in r["chosen"]) for criterion in CRITERIA}
    lines = [format_table(rows),
             "within ±1 of the true K: " + ", ".join(f"{c} {n}/{len(results)}"
                                                     for c, n in hits.items())]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench/results/choosing_k"))
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "results.json"
    results = json.loads(path.read_text()) if path.is_file() else []  # other cases stay
    for seed in args.seeds:
        for name in args.cases:
            results = [r for r in results if (r["case"], r["seed"]) != (name, seed)]
            results.append(run_case(name, seed, args.out))
            print(json.dumps(results[-1], default=float), flush=True)
            path.write_text(json.dumps(results, default=float, indent=1))
    order = list(CASES)
    print(summary(sorted(results, key=lambda r: (r["seed"], order.index(r["case"])))))


if __name__ == "__main__":
    main()
