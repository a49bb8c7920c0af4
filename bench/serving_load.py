"""Load test of serving/: 8 concurrent gRPC clients against `python -m serving.server` on
127.0.0.1, next to the same SavedModel called in-process by 8 threads, so the server's overhead
is a ratio.

    python -m bench.serving_load --requests 400 --json bench/results/serving_load.json

`--model models/NAME/V` load-tests a real export; without it the model is synthetic but
shaped like an export: the project's ConvNet backbone
(`mixem_tf.backbones`, random weights) at 28×28×1, K = 10 fixed centroids, the export contract's
`serving_default` signature (uint8 [N, H, W, C] → cluster, probabilities, distances,
embedding). Cases: requests of 1 image (server batching off and on) and of 32 images. Each
case sends `--requests` requests in total, split over `--clients` threads, each with its own
channel; the first `--warmup` requests per client are not timed. Any failed request fails the
benchmark. Latency is per request as the client sees it (request build to decoded response).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def write_synthetic_export(base: Path, size: int = 28, clusters: int = 10, seed: int = 0,
                           version: int = 1, warmup: bool = False) -> Path:
    """Saves BASE/VERSION with the contract's `serving_default` and `serving_bytes` (decoded
    with the export's header check, export/inputs.py) over a random-weight ConvNet; with
    `warmup`, also TF Serving's warm-up file (export/warmup.py)."""
    import keras
    import tensorflow as tf

    from export.inputs import DEFAULT_MAX_IMAGE_PIXELS, decode_checked
    from export.warmup import warmup_requests, write_warmup
    from mixem_tf.backbones import build_backbone

    keras.utils.set_random_seed(seed)
    backbone = build_backbone("convnet", (size, size, 1))
    dim = backbone.output_shape[-1]
    centroids = tf.constant(np.random.default_rng(seed).normal(size=(clusters, dim)), tf.float32)

    module = tf.Module()
    module.backbone = backbone

    def head(images):
        grey = tf.reduce_mean(tf.cast(images, tf.float32), axis=-1, keepdims=True) / 255.0
        embedding = module.backbone(tf.image.resize(grey, (size, size)), training=False)
        distances = tf.reduce_sum(tf.square(embedding[:, None] - centroids[None]), axis=-1)
        return {"cluster": tf.argmin(distances, axis=1, output_type=tf.int64),
                "probabilities": tf.nn.softmax(-distances), "distances": distances,
                "embedding": embedding}

    def decode(data):
        image = decode_checked(data, DEFAULT_MAX_IMAGE_PIXELS)[..., :1]
        return tf.image.resize(image, (size, size))

    module.serve = tf.function(head, input_signature=[
        tf.TensorSpec([None, None, None, None], tf.uint8, name="images")])
    module.serve_bytes = tf.function(
        lambda image_bytes: head(tf.map_fn(decode, image_bytes, parallel_iterations=1,
                                           fn_output_signature=tf.float32)),
        input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    path = base / str(version)
    tmp = base / f".tmp-{version}"  # written aside, then renamed into place
    tf.saved_model.save(module, str(tmp), signatures={"serving_default": module.serve,
                                                      "serving_bytes": module.serve_bytes})
    if warmup:
        pixels = np.random.default_rng(seed).integers(0, 256, (4, size, size, 1), np.uint8)
        write_warmup(tmp, warmup_requests(pixels, "mixem"))
    tmp.rename(path)
    return path


def percentiles(latencies: list[float]) -> tuple[float, float]:
    values = np.asarray(latencies) * 1e3
    return float(np.percentile(values, 50)), float(np.percentile(values, 99))


def drive(clients: int, requests: int, warmup: int, call) -> dict:
    """Runs `call(client_index)` `requests` times over `clients` threads; times each call."""
    per_client = requests // clients
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients + 1)

    def worker(index: int) -> None:
        mine = []
        try:
            for _ in range(warmup):
                call(index)
        except Exception as error:
            errors.append(repr(error))
        barrier.wait()
        for _ in range(per_client):
            started = time.perf_counter()
            try:
                call(index)
            except Exception as error:
                errors.append(repr(error))
            mine.append(time.perf_counter() - started)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    p50, p99 = percentiles(latencies)
    return {"requests": len(latencies), "errors": len(errors), "first_error": errors[:1],
            "seconds": seconds, "requests_per_s": len(latencies) / seconds, "p50_ms": p50,
            "p99_ms": p99}


class ServerProcess:
    """`python -m serving.server` on free loopback ports, stopped with SIGTERM; `port` (gRPC),
    `rest_port` (with --rest_api_port), `log`: (time.monotonic(), line) of its stderr."""

    def __init__(self, base: Path, flags: list[str]):
        env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "serving.server", "--port=0", "--model_name=mixem",
             f"--model_base_path={base}", "--file_system_poll_wait_seconds=0", *flags],
            cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
        self.log: list[tuple[float, str]] = []
        self.rest_port = None
        for line in self.process.stderr:
            self.log.append((time.monotonic(), line))
            rest = re.search(r"REST API listening on 127\.0\.0\.1:(\d+)", line)
            if rest:
                self.rest_port = int(rest.group(1))
            match = re.search(r"gRPC server listening on 127\.0\.0\.1:(\d+)", line)
            if match:
                self.port = int(match.group(1))
                break
        else:
            raise RuntimeError("the server did not start")
        threading.Thread(target=self._read_log, daemon=True).start()

    def _read_log(self) -> None:
        for line in self.process.stderr:
            self.log.append((time.monotonic(), line))

    def stop(self) -> int:
        self.process.terminate()
        return self.process.wait(timeout=60)


def grpc_caller(port: int, clients: int, batch: np.ndarray):
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    stubs = [prediction_service_pb2_grpc.PredictionServiceStub(
        grpc.insecure_channel(f"127.0.0.1:{port}")) for _ in range(clients)]

    def call(index: int) -> None:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "mixem"
        request.inputs["images"].CopyFrom(tf.make_tensor_proto(batch))
        response = stubs[index].Predict(request, timeout=60)
        assert tf.make_ndarray(response.outputs["cluster"]).shape == (len(batch),)

    return call


def in_process_caller(path: Path, batch: np.ndarray):
    import tensorflow as tf

    function = tf.saved_model.load(str(path)).signatures["serving_default"]

    def call(index: int) -> None:
        outputs = function(images=tf.constant(batch))
        assert outputs["cluster"].numpy().shape == (len(batch),)

    return call


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=400, help="timed requests per case")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=3, help="untimed requests per client")
    parser.add_argument("--model", type=Path, default=None,
                        help="an exported version folder (models/NAME/V) instead of the "
                             "synthetic model")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    if args.model is not None and not (args.model / "saved_model.pb").is_file():
        parser.error(f"--model {args.model} holds no saved_model.pb")

    cases = [("1", 1, []), ("1, server batching (max 32, 2 ms)", 1,
                            ["--enable_batching", "--max_batch_size=32",
                             "--batch_timeout_micros=2000"]), ("32", 32, [])]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "mixem"
        if args.model is None:
            path = write_synthetic_export(base)
        else:
            path = Path(shutil.copytree(args.model, base / "1"))
        rng = np.random.default_rng(0)
        for label, size, flags in cases:
            batch = rng.integers(0, 256, (size, 28, 28, 1), dtype=np.uint8)
            local = drive(args.clients, args.requests, args.warmup, in_process_caller(path, batch))
            server = ServerProcess(base, flags)
            try:
                remote = drive(args.clients, args.requests, args.warmup,
                               grpc_caller(server.port, args.clients, batch))
            finally:
                exit_code = server.stop()
            if remote["errors"] or local["errors"] or exit_code != 0:
                raise SystemExit(f"case {label}: {remote['errors']} server errors "
                                 f"{remote['first_error']}, {local['errors']} in-process errors, "
                                 f"server exit {exit_code}")
            rows.append({"images_per_request": label, "server": remote, "in_process": local,
                         "throughput_ratio": local["requests_per_s"] / remote["requests_per_s"]})

    print(f"{args.clients} clients, {args.requests} requests per case, load average "
          f"{os.getloadavg()[0]:.1f}")
    print("| images/request | server req/s | images/s | p50 ms | p99 ms | in-process req/s | "
          "p50 ms | p99 ms | in-process ÷ server |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        s, p = row["server"], row["in_process"]
        size = 32 if row["images_per_request"] == "32" else 1
        print(f"| {row['images_per_request']} | {s['requests_per_s']:.0f} | "
              f"{s['requests_per_s'] * size:.0f} | {s['p50_ms']:.1f} | {s['p99_ms']:.1f} | "
              f"{p['requests_per_s']:.0f} | {p['p50_ms']:.1f} | {p['p99_ms']:.1f} | "
              f"{row['throughput_ratio']:.2f} |")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"clients": args.clients, "requests":
                                               args.requests, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
