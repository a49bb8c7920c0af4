"""Serving overhead, side by side: the same SavedModel called in-process, over gRPC and over
REST (`python -m serving.server` on 127.0.0.1), interleaved in rounds so the load of a shared
machine hits every path alike.

    python -m bench.serving_load --rounds 5 --requests 80 --json bench/results/serving_load.json
    python -m bench.serving_load --model models/mixem/1 --image-size 8     # a real export

Cases: one client at 1 and 8 images per request (in-process, gRPC with the stock
`PredictionServiceStub`, REST :predict in the row format on a kept-alive `http.client`
connection); 8 clients at 1 image per request, with server batching off and on (two server
processes, both with REST). Each round runs every case in turn, `--requests` timed requests
split over its clients, after `--warmup` untimed ones per client. Latency is per request as
the client sees it (request build to decoded response); "CPU ms/request" is the CPU time of
the server process (of this process for in-process calls) over the timed requests; "÷
in-process" is throughput over the in-process throughput of the same clients and batch. Any
failed request fails the benchmark.

`--model models/NAME/V` measures a real export; without it the model is synthetic but shaped
like an export: the project's ConvNet backbone (`mixem_tf.backbones`, random weights) at
`--image-size`, K = 10 fixed centroids, the export contract's signatures (uint8
[N, H, W, C] → cluster, probabilities, distances, embedding).
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


class Case:
    """One way of sending requests, timed over rounds: `call(client_index)` sends one request;
    `clients` threads call it `per_round` times each per round. `process` (a psutil.Process)
    is the one whose CPU time the requests cost: the server's, or this one for in-process
    calls."""

    def __init__(self, label: str, clients: int, call, process):
        self.label, self.clients, self.call, self.process = label, clients, call, process
        self.latencies: list[float] = []
        self.seconds = 0.0
        self.cpu_seconds = 0.0
        self.errors: list[str] = []

    def warm_up(self, calls: int) -> None:
        self.run(calls, timed=False)

    def run(self, per_client: int, timed: bool = True) -> None:
        """`per_client` calls on each of `clients` threads at once; adds their latencies and
        the wall time of the round."""
        latencies: list[float] = []
        lock = threading.Lock()
        barrier = threading.Barrier(self.clients + 1)

        def worker(index: int) -> None:
            mine = []
            barrier.wait()
            for _ in range(per_client):
                started = time.perf_counter()
                try:
                    self.call(index)
                except Exception as error:
                    self.errors.append(repr(error))
                mine.append(time.perf_counter() - started)
            with lock:
                latencies.extend(mine)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(self.clients)]
        for thread in threads:
            thread.start()
        cpu = self.process.cpu_times()
        barrier.wait()
        started = time.perf_counter()
        for thread in threads:
            thread.join()
        if timed:
            self.seconds += time.perf_counter() - started
            now = self.process.cpu_times()
            self.cpu_seconds += now.user + now.system - cpu.user - cpu.system
            self.latencies.extend(latencies)

    def result(self) -> dict:
        p50, p99 = percentiles(self.latencies)
        return {"requests": len(self.latencies), "errors": len(self.errors),
                "first_error": self.errors[:1], "seconds": self.seconds,
                "requests_per_s": len(self.latencies) / self.seconds, "p50_ms": p50,
                "p99_ms": p99, "cpu_ms_per_request": 1e3 * self.cpu_seconds
                / len(self.latencies)}


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
    """Predict over gRPC, one channel per client (the stock stub)."""
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


def rest_caller(port: int, clients: int, batch: np.ndarray):
    """:predict in TF Serving's row format over REST, one kept-alive connection per client
    (http.client with its defaults, as HTTP client libraries reuse a connection; like them, it
    reconnects once when the server has closed an idle one)."""
    import http.client

    connections = [http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                   for _ in range(clients)]

    def send(connection, body: str):
        connection.request("POST", "/v1/models/mixem:predict", body,
                           {"Content-Type": "application/json"})
        return connection.getresponse()

    def call(index: int) -> None:
        body = json.dumps({"instances": batch.tolist()})
        connection = connections[index]
        try:
            reply = send(connection, body)
        except (ConnectionError, http.client.RemoteDisconnected):  # closed while idle
            connection.close()
            reply = send(connection, body)
        data = reply.read()
        if reply.status != 200:
            raise RuntimeError(f"HTTP {reply.status}: {data[:200]!r}")
        assert len(json.loads(data)["predictions"]) == len(batch)

    return call


def in_process_caller(function, batch: np.ndarray):
    """The SavedModel's signature called in this process (`function`: a loaded signature)."""
    import tensorflow as tf

    def call(index: int) -> None:
        outputs = function(images=tf.constant(batch))
        assert outputs["cluster"].numpy().shape == (len(batch),)

    return call


BATCHING = ["--enable_batching", "--max_batch_size=32", "--batch_timeout_micros=2000"]


def build_cases(path: Path, plain: ServerProcess, batching: ServerProcess,
                image_size: int) -> list[tuple[str, int, Case]]:
    """(group, images per request, case): one client at 1 and 8 images per request over each
    path; 8 clients at 1 image, with server batching off and on."""
    import psutil
    import tensorflow as tf

    function = tf.saved_model.load(str(path)).signatures["serving_default"]
    here, served, batched = (psutil.Process(), psutil.Process(plain.process.pid),
                             psutil.Process(batching.process.pid))
    rng = np.random.default_rng(0)
    cases = []
    for size in (1, 8):
        batch = rng.integers(0, 256, (size, image_size, image_size, 1), dtype=np.uint8)
        cases += [
            ("1 client", size, Case("in-process", 1, in_process_caller(function, batch), here)),
            ("1 client", size, Case("gRPC", 1, grpc_caller(plain.port, 1, batch), served)),
            ("1 client", size, Case("REST", 1, rest_caller(plain.rest_port, 1, batch), served)),
        ]
    batch = rng.integers(0, 256, (1, image_size, image_size, 1), dtype=np.uint8)
    clients = 8
    cases += [
        ("8 clients", 1, Case("in-process", clients, in_process_caller(function, batch), here)),
        ("8 clients", 1, Case("gRPC", clients, grpc_caller(plain.port, clients, batch), served)),
        ("8 clients", 1, Case("gRPC, batching", clients,
                              grpc_caller(batching.port, clients, batch), batched)),
        ("8 clients", 1, Case("REST", clients, rest_caller(plain.rest_port, clients, batch),
                              served)),
        ("8 clients", 1, Case("REST, batching", clients,
                              rest_caller(batching.rest_port, clients, batch), batched)),
    ]
    return cases


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5,
                        help="rounds; each runs every case once, in turn")
    parser.add_argument("--requests", type=int, default=80,
                        help="timed requests per case per round (split over its clients)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed requests per client")
    parser.add_argument("--model", type=Path, default=None,
                        help="an exported version folder (models/NAME/V) instead of the "
                             "synthetic model")
    parser.add_argument("--image-size", type=int, default=28,
                        help="height and width of the images sent (uint8, 1 channel)")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    if args.model is not None and not (args.model / "saved_model.pb").is_file():
        parser.error(f"--model {args.model} holds no saved_model.pb")

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "mixem"
        if args.model is None:
            path = write_synthetic_export(base, size=args.image_size)
        else:
            path = Path(shutil.copytree(args.model, base / "1"))
        servers = [ServerProcess(base, ["--rest_api_port=0"]),
                   ServerProcess(base, ["--rest_api_port=0", *BATCHING])]
        try:
            cases = build_cases(path, *servers, image_size=args.image_size)
            for _, _, case in cases:
                case.warm_up(args.warmup)
            for round_index in range(args.rounds):  # interleaved: load hits every case alike
                for _, _, case in cases:
                    case.run(max(args.requests // case.clients, 1))
                print(f"round {round_index + 1}/{args.rounds} done", file=sys.stderr)
        finally:
            exit_codes = [server.stop() for server in servers]
    failed = [(case.label, case.errors[:1]) for _, _, case in cases if case.errors]
    if failed or any(exit_codes):
        raise SystemExit(f"failed requests {failed}, server exits {exit_codes}")

    rows = []
    for group, size, case in cases:
        reference = next(c for g, s, c in cases if (g, s) == (group, size)
                         and c.label == "in-process").result()
        result = case.result()
        rows.append({"clients": group, "images_per_request": size, "path": case.label,
                     **result, "vs_in_process": result["requests_per_s"]
                     / reference["requests_per_s"]})
    load_after = os.getloadavg()
    print(f"{args.rounds} rounds x {args.requests} requests per case, interleaved; load "
          f"average (1, 5, 15 min) before {load_before[0]:.1f} {load_before[1]:.1f} "
          f"{load_before[2]:.1f}, after {load_after[0]:.1f} {load_after[1]:.1f} "
          f"{load_after[2]:.1f}")
    print("| clients | images/request | path | req/s | images/s | p50 ms | p99 ms | "
          "CPU ms/request | ÷ in-process |")
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        print(f"| {row['clients']} | {row['images_per_request']} | {row['path']} | "
              f"{row['requests_per_s']:.0f} | "
              f"{row['requests_per_s'] * row['images_per_request']:.0f} | "
              f"{row['p50_ms']:.1f} | {row['p99_ms']:.1f} | "
              f"{row['cpu_ms_per_request']:.1f} | {row['vs_in_process']:.2f} |")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"rounds": args.rounds, "requests":
                                               args.requests, "load_before": load_before,
                                               "load_after": load_after, "rows": rows},
                                              indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
