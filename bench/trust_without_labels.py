"""Does the label-free verdict "model vs pixels" agree with ACC, and are the probabilities
calibrated? One table row per (dataset, epochs).

    python -m bench.trust_without_labels --datasets digits fashion2000 --epochs 2 8

`fashion2000` is a `folder:` of 2,000 Fashion-MNIST images (200 per class, 28-px PNGs in one
sub-folder per class, so the folder has labels to check against; `bench.fmnist_folder
--grey`), written to a temporary folder. Each dataset trains MIX'EM (its recipe) for the first budget, is scored, then resumed
to each longer budget and scored again. Per budget it prints:

- verdict: the run's label-free warning against K-means on pixels (`quality.compare_to_pixels`:
  stability beyond chance, κ) next to the ACC of the default read-out and of pixel K-means
  (scikit-learn budget, fit and scored on the evaluation images);
- ECE against labels (15 bins, Hungarian-matched correctness) of the default K-means read-out
  and of the method's argmax read-out (`ece_rows`): before (K-means: T = inertia per image;
  argmax: the method's own p), with T fitted by the NLL of the augmented view's cluster, and
  with the served label-free T (agreement).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.fmnist_folder import make_folder
from mixem_tf import cluster
from mixem_tf.calibration import (correct_under_matching, expected_calibration_error,
                                  softmax)
from mixem_tf.report import format_table


def ece_rows(run_dir, seed: int = 0) -> list[dict]:
    """ECE against labels of the run's default read-out and its argmax read-outs, under three
    temperatures: before (K-means: inertia per image; argmax: the method's own p), the NLL of
    the augmented view's cluster (`fit_temperature`), and the served one (agreement)."""
    from mixem_tf.assessment import agreement_temperature, readout_logits
    from mixem_tf.calibration import fit_temperature
    from mixem_tf.features import evaluation_features, evaluation_labels
    from mixem_tf.readouts import load_readouts

    clean = evaluation_features(run_dir, "clean", seed=seed)
    augmented = evaluation_features(run_dir, "augmented", seed=seed)
    labels = evaluation_labels(run_dir)
    out = []
    for readout in load_readouts(run_dir):
        if not (readout.row["default"] or readout.head == "argmax"):
            continue
        logits = readout_logits(readout, clean)
        clusters, views = readout.assign(clean), readout.assign(augmented)
        correct = correct_under_matching(clusters, labels)
        row = {"read-out": readout.name, "accuracy": float(correct.mean())}
        for what, temperature in (
                ("before", float((-logits.max(1)).mean()) if readout.head != "argmax" else 1.0),
                ("views NLL", fit_temperature(logits, views)),
                ("agreement", agreement_temperature(logits, clusters, views))):
            confidence = softmax(logits, temperature)[np.arange(len(clusters)), clusters]
            row[f"conf {what}"] = float(confidence.mean())
            row[f"ECE {what}"] = expected_calibration_error(confidence, correct)
        out.append(row)
    return out


def bench_dataset(name, dataset, budgets, seed, work: Path):
    from mixem_tf.data import load_protocol
    from mixem_tf.settings import TrainConfig
    from mixem_tf.training import train_run
    from trainers.pixel_kmeans import pixel_kmeans

    config = TrainConfig(dataset=dataset, method="mixem", epochs=budgets[0], seed=seed)
    out = work / f"{Path(name.removeprefix('folder:')).name}-run"
    results = []
    for i, epochs in enumerate(budgets):
        start = time.perf_counter()
        started = (out / "config.json").is_file()  # a kept run (--work) goes on from there
        result = (train_run(config, out, verbose=2) if i == 0 and not started else
                  train_run(None, out, resume=True, epochs=epochs, verbose=2))
        wall = time.perf_counter() - start
        resolved = result.config
        _, evaluation = load_protocol(
            resolved.dataset, train_on=resolved.train_on, evaluate_on=resolved.evaluate_on,
            image_size=resolved.image_size if dataset.startswith("folder:") else None)
        pixels = pixel_kmeans(evaluation, evaluation, num_clusters=evaluation.num_classes,
                              normalize=False, settings=cluster.SKLEARN, seed=seed)
        best = result.default_readout.row
        verdict = best["label_free"]["warning"]
        results.append({
            "dataset": name, "epochs": epochs, "images": len(evaluation),
            "model kappa": best["label_free"]["kappa"],
            "pixel kappa": result.pixels["label_free"]["kappa"],
            "verdict": "pixels" if verdict else "model",
            "model ACC": best["acc"], "pixel ACC": pixels["acc"],
            "ACC says": "model" if best["acc"] > pixels["acc"] else "pixels",
            "wall s": wall,
            "ece": ece_rows(out, seed)})
        print(format_table([{k: v for k, v in results[-1].items() if k != "ece"}]), flush=True)
        print(format_table(results[-1]["ece"]), flush=True)
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["digits", "fashion2000"])
    parser.add_argument("--epochs", nargs="+", type=int, default=[2, 8],
                        help="budgets, ascending: trained, then resumed to each")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--work", type=Path, default=None,
                        help="keep the runs (and the folder data) here (default: a temporary "
                             "folder, removed at the end)")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as temporary:
        work = args.work or Path(temporary)
        for name in args.datasets:
            dataset = (f"folder:{make_folder(work / 'fashion2000', images=2000, grey=True)}"
                       if name == "fashion2000" else name)
            rows += bench_dataset(name, dataset, sorted(args.epochs), args.seed, work)
    print(format_table([{k: v for k, v in r.items() if k != "ece"} for r in rows]))
    print(format_table([{"dataset": r["dataset"], "epochs": r["epochs"], **e}
                        for r in rows for e in r["ece"]]))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
