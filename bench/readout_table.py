"""What the read-out table costs after a short run, per `--readouts` mode, against the run's
training time.

    python -m bench.readout_table --method mixem --epochs 1 --repeats 3

Trains one run (digits by default, `--readouts default`), then times `evaluate_run` on the
trained model for each mode, `--repeats` times, interleaved (median kept). Every mode embeds
the evaluation images and scores its read-outs without labels the same way, so the difference
between a mode and `default` is what its extra table rows cost.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from mixem_tf.cli import run


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.readout_table", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--method", default="mixem")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    from mixem_tf.runs import load_evaluation
    from mixem_tf.settings import TrainConfig
    from mixem_tf.training import READOUT_MODES, evaluate_run, train_run

    with tempfile.TemporaryDirectory() as work:
        start = time.perf_counter()
        result = train_run(TrainConfig(dataset=args.dataset, method=args.method,
                                       epochs=args.epochs), Path(work) / "run", verbose=0,
                           readouts="default")
        run_s = time.perf_counter() - start
        config = result.config
        evaluation = load_evaluation(config)
        clusters = result.default_readout.num_clusters
        times = {mode: [] for mode in READOUT_MODES}
        rows = {}
        for _ in range(args.repeats):
            for mode in READOUT_MODES:
                start = time.perf_counter()
                rows[mode] = len(evaluate_run(result.model, evaluation, clusters, config,
                                              readouts=mode))
                times[mode].append(time.perf_counter() - start)
    print(f"{args.method} on {args.dataset}, {args.epochs} epoch(s): the whole run "
          f"(training and a default-only evaluation) {run_s:.1f} s")
    base = float(np.median(times["default"]))
    for mode in READOUT_MODES:
        median = float(np.median(times[mode]))
        print(f"--readouts {mode:8s} {rows[mode]:2d} rows  evaluation {median:6.1f} s  "
              f"table beyond the default {median - base:6.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(run(main))
