"""Inference throughput of an exported model: the SavedModel (TensorFlow) and its ONNX file
(ONNX Runtime, CPU), at several batch sizes, whole signature (resize, normalisation, encoder,
clustering head), warm-up excluded.

    python -m bench.inference_throughput --model models/mixem/1 --onnx mixem.onnx
    python -m bench.inference_throughput --model models/mixem/1 --onnx mixem.onnx \\
        --shape 28x28x1 --batch-sizes 1,64 --seconds 5

Images are random uint8 of `--shape` (default: the training shape from the model card), so an
other shape also times the in-graph resize. Each measurement repeats the call for at least
`--seconds` after `--warmup` calls and reports images/s and the median latency per call.
"""

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np

from bench.augment_throughput import parse_shape
from export.runtime import load_predictor
from mixem_tf.report import format_table


def measure(predict, images, seconds: float, warmup: int) -> dict:
    """images/s and median ms per call of `predict(images)`."""
    for _ in range(warmup):
        predict(images)
    latencies, start = [], time.perf_counter()
    while time.perf_counter() - start < seconds or len(latencies) < 3:
        t = time.perf_counter()
        predict(images)
        latencies.append(time.perf_counter() - t)
    return {"images/s": round(len(images) * len(latencies) / sum(latencies)),
            "ms/call": f"{1000 * statistics.median(latencies):.2f}", "calls": len(latencies)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="SavedModel version folder")
    parser.add_argument("--onnx", type=Path, default=None, help="its ONNX file")
    parser.add_argument("--shape", type=parse_shape, default=None, help="HxWxC of the inputs")
    parser.add_argument("--batch-sizes", default="1,64")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args(argv)
    card = json.loads((args.model / "assets" / "model_card.json").read_text())
    shape = args.shape or tuple(card["input_shape"])
    runtimes = [("SavedModel (TensorFlow)", load_predictor(saved_model=args.model))]
    if args.onnx:
        runtimes.append(("ONNX Runtime", load_predictor(onnx=args.onnx)))
    rng = np.random.default_rng(0)
    rows = []
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        images = rng.integers(0, 256, (batch, *shape), dtype=np.uint8)
        for name, predict in runtimes:
            rows.append({"runtime": name, "input": "x".join(map(str, shape)), "batch": batch,
                         **measure(predict, images, args.seconds, args.warmup)})
    print(f"model {args.model} ({card['method']} on {card['dataset']}, "
          f"{card['training']['backbone']}); {os.cpu_count()} CPUs, load "
          f"{os.getloadavg()[0]:.1f}")
    print(format_table(rows, ["runtime", "input", "batch", "images/s", "ms/call", "calls"]))


if __name__ == "__main__":
    main()
