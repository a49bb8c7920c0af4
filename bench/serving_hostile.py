"""What hostile clients cost `python -m serving.server` (peak RSS, stalls), and p99 latency
across a hot swap with and without TF Serving's warm-up file (issue 20).

    python -m bench.serving_hostile --json bench/results/serving_hostile.json

Model: bench/serving_load.py's synthetic export (the project's ConvNet at 28×28, random
weights, `serving_default` and `serving_bytes`). Everything runs on 127.0.0.1.

Attacks (each refused; the server's RSS is sampled every 10 ms with psutil while it runs, and
a probe client sends one normal 1-image Predict every 50 ms, so a stall shows as its latency):
a 55-byte string request claiming 60,000,000 rows; a 46-byte uint8 request claiming
[1, 8192, 8192, 1]; a `[-1, 8, 8, 1]` shape; three concurrent 20000 × 20000 PNGs (a real,
decodable ~400 KB file); a REST body announcing 100 MB (over the 64 MiB limit); a real 50 MB
JSON body (under it: 12.5 M pixels), and one just under the JSON value limit; 100,000-deep
JSON; `--half` REST
connections sending half a body (then SIGTERM: the seconds to exit are reported).

Hot swap: `--clients` threads send 1-image requests (at the training shape) for `--seconds`;
a third of the way in, version 2 is renamed into place (poll every 0.2 s); with `--model`,
versions 1 and 2 are copies of that export, else synthetic. Reported: p99 of the requests
answered by version 1, p99 and max of the first `FIRST_REQUESTS` answered by version 2 (what a
cold version costs), and p99 of all requests sent from 1 s before to 3 s after the swap was
logged (also the load of version 2 beside version 1); once with version 2 exported with
`assets.extra/tf_serving_warmup_requests`, once without.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import struct
import sys
import tempfile
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from bench.memory import Background, PeakRSS
from bench.serving_load import ServerProcess, percentiles, write_synthetic_export
from serving.warmup import WARMUP_FILE

SWAP_WINDOW_S = 3.0
FIRST_REQUESTS = 200  # requests answered by the new version that count as its first


def bomb_png(side: int = 20000) -> bytes:
    """A valid grey PNG of side × side black pixels: ~400 KB that decodes to side² bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    compressor = zlib.compressobj(9)
    row = b"\x00" * (side + 1)  # filter byte + pixels
    data = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data)
            + chunk(b"IEND", b""))


def _request(inputs: dict, signature: str = ""):
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "mixem"
    request.model_spec.signature_name = signature
    for key, value in inputs.items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
    return request


def _claim(request, key: str, shape, int_value: bool):
    """`request` with input `key` claiming `shape` from one value."""
    tensor = request.inputs[key]
    tensor.ClearField("tensor_content")
    if int_value:
        tensor.int_val[:] = [0]
    tensor.tensor_shape.ClearField("dim")
    for size in shape:
        tensor.tensor_shape.dim.add(size=size)
    return request


class Probe(Background):
    """One normal Predict every 50 ms; `worst_ms` is the slowest while in use."""

    period = 0.05

    def __init__(self, stub, request):
        super().__init__()
        self.stub, self.request, self.latencies = stub, request, []

    def tick(self):
        started = time.perf_counter()
        self.stub.Predict(self.request, timeout=60)
        self.latencies.append(time.perf_counter() - started)

    @property
    def worst_ms(self) -> float:
        return 1e3 * max(self.latencies, default=0.0)


def _grpc_attack(stub, request, copies: int = 1) -> str:
    """Sends `copies` of `request` at once; returns the status codes they got."""
    import grpc

    def send(_):
        try:
            stub.Predict(request, timeout=60)
            return "OK"
        except grpc.RpcError as error:
            return error.code().name

    with ThreadPoolExecutor(copies) as pool:
        return ",".join(sorted(set(pool.map(send, range(copies)))))


def _http(port: int, head: bytes, body: bytes = b"", wait: float = 30.0) -> str:
    """A raw HTTP exchange; returns the status line."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        sock.sendall(head + body)
        reply = sock.recv(65536)
    return reply.split(b"\r\n", 1)[0].decode() or "closed"


def _post(port: int, body: bytes, length: int | None = None) -> str:
    head = (f"POST /v1/models/mixem:predict HTTP/1.1\r\nHost: x\r\nContent-Length: "
            f"{len(body) if length is None else length}\r\n\r\n").encode()
    return _http(port, head, body)


def attacks(base: Path, half: int) -> list[dict]:
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    server = ServerProcess(base, ["--rest_api_port=0", "--shutdown_grace_seconds=5"])
    stub = prediction_service_pb2_grpc.PredictionServiceStub(
        grpc.insecure_channel(f"127.0.0.1:{server.port}"))
    normal = _request({"images": np.zeros((1, 28, 28, 1), np.uint8)})
    stub.Predict(normal, timeout=60)
    png = bomb_png()
    big_json = b'{"instances": [[[' + b",".join([b"[0]"] * 12_500_000) + b"]]]}"  # 50 MB
    limit_json = b'{"instances": [[[' + b",".join([b"[0]"] * 349_000) + b"]]]}"
    deep = b'{"instances": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    cases = [
        ("60M rows claimed by a 55-byte string request", lambda: _grpc_attack(stub, _claim(
            _request({"image_bytes": np.array([b"x"], dtype=object)}, "serving_bytes"),
            "image_bytes", (60_000_000,), False))),
        ("[1, 8192, 8192, 1] claimed by a 46-byte uint8 request", lambda: _grpc_attack(
            stub, _claim(_request({"images": np.zeros((1, 1, 1, 1), np.uint8)}), "images",
                         (1, 8192, 8192, 1), True))),
        ("[-1, 8, 8, 1]", lambda: _grpc_attack(stub, _claim(
            _request({"images": np.zeros((1, 1, 1, 1), np.uint8)}), "images", (-1, 8, 8, 1),
            True))),
        (f"3 × a {len(png) // 1000} KB PNG of 20000 × 20000 pixels", lambda: _grpc_attack(
            stub, _request({"image_bytes": np.array([png], dtype=object)}, "serving_bytes"), 3)),
        ("REST: Content-Length 100 MB, no body sent", lambda: _post(server.rest_port, b"",
                                                                 100_000_000)),
        ("REST: a 50 MB JSON body of pixels (under --max_request_bytes)",
         lambda: _post(server.rest_port, big_json)),
        ("REST: a JSON body at --rest_api_max_json_values (1 Mi pixels)",
         lambda: _post(server.rest_port, limit_json)),
        ("REST: 100,000-deep JSON", lambda: _post(server.rest_port, deep)),
    ]
    baseline = PeakRSS(server.process.pid).peak
    rows = []
    try:
        for label, attack in cases:
            with PeakRSS(server.process.pid) as rss, Probe(stub, normal) as probe:
                started = time.perf_counter()
                answer = attack()
                seconds = time.perf_counter() - started
                time.sleep(0.2)  # the probe gets a turn after the attack too
            rows.append({"attack": label, "answer": answer, "seconds": seconds,
                         "peak_rss_mib": rss.peak / 2**20, "baseline_rss_mib": baseline / 2**20,
                         "worst_probe_ms": probe.worst_ms})
        sockets = []
        with PeakRSS(server.process.pid) as rss, Probe(stub, normal) as probe:
            for _ in range(half):  # half-sent bodies, left open
                sock = socket.create_connection(("127.0.0.1", server.rest_port))
                sock.sendall(b"POST /v1/models/mixem:predict HTTP/1.1\r\nHost: x\r\n"
                             b"Content-Length: 1000\r\n\r\n{")
                sockets.append(sock)
            time.sleep(1.0)
        started = time.monotonic()
        code = server.stop()
        stopped = [t for t, line in server.log if line.rstrip().endswith("stopped")]
        logged = f"'stopped' logged at {stopped[0] - started:.1f} s" if stopped else "no 'stopped'"
        rows.append({"attack": f"REST: {half} half-sent bodies, then SIGTERM (grace 5 s)",
                     "answer": f"exit {code}; {logged}", "seconds": time.monotonic() - started,
                     "peak_rss_mib": rss.peak / 2**20, "baseline_rss_mib": baseline / 2**20,
                     "worst_probe_ms": probe.worst_ms})
        for sock in sockets:
            sock.close()
    finally:
        if server.process.poll() is None:
            server.process.kill()
    return rows


def _version_2(incoming: Path, model: Path | None, warmup: bool) -> Path:
    """Version 2 under `incoming`: a copy of `model` (or a synthetic export), with or without
    its warm-up file."""
    if model is None:
        return write_synthetic_export(incoming, seed=1, version=2, warmup=warmup)
    target = Path(shutil.copytree(model, incoming / "2"))
    if not warmup:
        shutil.rmtree(target / "assets.extra", ignore_errors=True)
    return target


def _image_shape(version: Path) -> tuple:
    """The training images' (H, W, C) from an export's model card; 28 × 28 × 1 otherwise."""
    card = version / "assets" / "model_card.json"
    return tuple(json.loads(card.read_text())["input_shape"]) if card.is_file() else (28, 28, 1)


def hot_swap(base: Path, clients: int, seconds: float, warmup: bool,
             model: Path | None = None) -> dict:
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    server = ServerProcess(base, ["--file_system_poll_wait_seconds=0.2"])
    request = _request({"images": np.zeros((1, *_image_shape(base / "1")), np.uint8)})
    stubs = [prediction_service_pb2_grpc.PredictionServiceStub(
        grpc.insecure_channel(f"127.0.0.1:{server.port}")) for _ in range(clients)]
    for stub in stubs:
        stub.Predict(request, timeout=60)
    samples: list[tuple[float, float, int]] = []  # (start, latency, version that answered)
    errors: list[str] = []

    def client(stub):
        for _ in range(100_000):  # bounded in count and in time
            if time.monotonic() > deadline:
                return
            started = time.monotonic()
            try:
                version = stub.Predict(request, timeout=60).model_spec.version.value
            except grpc.RpcError as error:
                errors.append(error.code().name)
                version = 0
            samples.append((started, time.monotonic() - started, version))

    incoming = base.parent / f"incoming-{warmup}"
    _version_2(incoming, model, warmup)  # written before the clients start
    deadline = time.monotonic() + seconds
    threads = [threading.Thread(target=client, args=(stub,)) for stub in stubs]
    try:
        for thread in threads:
            thread.start()
        time.sleep(seconds / 3)
        (incoming / "2").rename(base / "2")
        for thread in threads:
            thread.join()
    finally:
        code = server.stop()
    swapped = [t for t, line in server.log if "now serving version 2" in line]
    if not swapped or errors or code != 0:
        raise SystemExit(f"hot swap: swapped {bool(swapped)}, errors {errors[:3]}, exit {code}")
    samples.sort()
    old = [latency for _, latency, version in samples if version == 1]
    first = [latency for _, latency, version in samples if version == 2][:FIRST_REQUESTS]
    window = [latency for started, latency, _ in samples
              if swapped[0] - SWAP_WINDOW_S / 3 <= started <= swapped[0] + SWAP_WINDOW_S]
    shutil.rmtree(base / "2")
    return {"warmup_file": warmup, "requests": len(samples),
            "p99_version_1_ms": percentiles(old)[1],
            "p99_first_on_version_2_ms": percentiles(first)[1],
            "max_first_on_version_2_ms": 1e3 * max(first),
            "p99_around_swap_ms": percentiles(window)[1]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=12.0, help="per hot-swap run")
    parser.add_argument("--half", type=int, default=300, help="half-sent REST bodies")
    parser.add_argument("--model", type=Path, default=None,
                        help="hot-swap this export (models/NAME/V, with its warm-up file) "
                             "instead of the synthetic model")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    if args.model is not None and not (args.model / WARMUP_FILE).is_file():
        parser.error(f"--model {args.model} has no {WARMUP_FILE} (export it again)")
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "mixem"
        write_synthetic_export(base, warmup=True)
        attack_rows = attacks(base, args.half)
        if args.model is not None:
            shutil.rmtree(base / "1")
            shutil.copytree(args.model, base / "1")
        swaps = [hot_swap(base, args.clients, args.seconds, warmup, args.model)
                 for warmup in (False, True)]
    print("| attack | answer | s | peak RSS MiB (idle) | worst probe ms |")
    print("| --- | --- | ---: | ---: | ---: |")
    for row in attack_rows:
        print(f"| {row['attack']} | {row['answer']} | {row['seconds']:.2f} | "
              f"{row['peak_rss_mib']:.0f} ({row['baseline_rss_mib']:.0f}) | "
              f"{row['worst_probe_ms']:.0f} |")
    print(f"\n| version 2 | requests | p99 ms on version 1 | p99 ms, first {FIRST_REQUESTS} "
          f"on version 2 | max ms, those | p99 ms, swap -1 s..+3 s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for row in swaps:
        label = "with warm-up file" if row["warmup_file"] else "without warm-up file"
        print(f"| {label} | {row['requests']} | {row['p99_version_1_ms']:.1f} | "
              f"{row['p99_first_on_version_2_ms']:.1f} | {row['max_first_on_version_2_ms']:.0f} | "
              f"{row['p99_around_swap_ms']:.1f} |")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"attacks": attack_rows, "hot_swap": swaps},
                                              indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
