"""`python -m serving.server` as a process (SIGTERM) and `python -m serving.client` end to end."""

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
grpc = pytest.importorskip("grpc")
from tensorflow_serving.apis import prediction_service_pb2_grpc  # noqa: E402

from serving import client as client_cli  # noqa: E402
from serving import server as server_cli  # noqa: E402
from serving_fixtures import (  # noqa: E402
    lingering_rest_connections,
    own_outputs,
    png_bytes,
    predict_request,
    write_model,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_base(tmp_path_factory):
    base = tmp_path_factory.mktemp("cli") / "mixem"
    base.mkdir()
    write_model(base, 1)
    return base


@pytest.fixture(scope="module")
def served(model_base):
    args = server_cli.build_parser().parse_args(
        ["--port=0", "--model_name=mixem", f"--model_base_path={model_base}",
         "--file_system_poll_wait_seconds=0"])
    running = server_cli.start(args)
    yield running
    running.stop(1)


def write_images(folder):
    rng = np.random.default_rng(0)
    arrays = {"a.png": rng.integers(0, 256, (10, 12, 3), dtype=np.uint8),
              "b.png": rng.integers(0, 256, (10, 12, 3), dtype=np.uint8),
              "grey.png": rng.integers(0, 256, (20, 5, 1), dtype=np.uint8)}
    for name, array in arrays.items():
        (folder / name).write_bytes(png_bytes(array))
    (folder / "broken.png").write_bytes(b"this is no image")
    return arrays


def table(stdout):
    rows = [line.split() for line in stdout.strip().splitlines()[1:]]
    return {Path(path).name: (int(cluster), float(p)) for path, cluster, p in rows}


@pytest.mark.parametrize("as_bytes", [False, True], ids=["pixels", "bytes"])
def test_client_prints_cluster_and_probability_and_reports_bad_files(
        served, model_base, tmp_path, capsys, as_bytes):
    arrays = write_images(tmp_path)
    paths = [str(tmp_path / name) for name in ("a.png", "broken.png", "grey.png", "b.png")]
    flags = ["--bytes"] if as_bytes else []
    code = client_cli.main(["--server", f"127.0.0.1:{served.port}", "--model", "mixem",
                            *flags, *paths])
    out, err = capsys.readouterr()
    assert code == 1  # one file could not be classified
    assert "broken.png" in err
    rows = table(out)
    assert list(rows) == ["a.png", "grey.png", "b.png"]  # input order kept
    for name, (cluster, probability) in rows.items():
        want = own_outputs(model_base / "1", "serving_default", {"images": arrays[name][None]})
        if not as_bytes:  # decoded bytes are resized in float: compare pixels exactly only
            assert cluster == want["cluster"][0]
            assert probability == pytest.approx(want["probabilities"][0, cluster], abs=1e-4)
        assert 0 < probability <= 1


def test_client_without_a_server_says_so_in_one_line(tmp_path, capsys):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    write_images(tmp_path)
    code = client_cli.main(["--server", f"127.0.0.1:{port}", "--timeout", "1",
                            str(tmp_path / "a.png")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().count("\n") == 0 and err.startswith("error: cannot reach")


def test_client_unknown_model_exits_2(served, tmp_path, capsys):
    write_images(tmp_path)
    code = client_cli.main(["--server", f"127.0.0.1:{served.port}", "--model", "nope",
                            str(tmp_path / "a.png")])
    assert code == 2
    assert "NOT_FOUND" in capsys.readouterr().err


@pytest.mark.slow
def test_sigterm_finishes_the_in_flight_request_and_exits_0(model_base):
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3")
    process = subprocess.Popen(
        [sys.executable, "-m", "serving.server", "--port=0", "--model_name=mixem",
         f"--model_base_path={model_base}", "--enable_batching",
         "--batch_timeout_micros=60000000"],  # a request waits for its batch up to a minute
        cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    try:
        port = None
        for line in process.stderr:
            match = re.search(r"gRPC server listening on 127\.0\.0\.1:(\d+)", line)
            if match:
                port = int(match.group(1))
                break
        assert port, "the server did not start"
        stub = prediction_service_pb2_grpc.PredictionServiceStub(
            grpc.insecure_channel(f"127.0.0.1:{port}"))
        x = np.zeros((1, 8, 8, 3), np.uint8)
        pending = stub.Predict.future(predict_request({"images": x}), timeout=60)
        time.sleep(1.0)  # the request now waits in its batch
        assert not pending.done()
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        response = pending.result()
        assert response.model_spec.version.value == 1
        assert process.wait(timeout=30) == 0
        assert time.monotonic() - started < 30
        assert "shutting down" in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()


@pytest.mark.slow
def test_sigterm_exits_within_the_grace_with_idle_and_half_sent_rest_connections(model_base):
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3")
    process = subprocess.Popen(
        [sys.executable, "-m", "serving.server", "--port=0", "--rest_api_port=0",
         "--model_name=mixem", f"--model_base_path={model_base}",
         "--shutdown_grace_seconds=2"],  # the REST request timeout (30 s) is far longer
        cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    connections = []
    try:
        rest = None
        for line in process.stderr:
            match = re.search(r"REST API listening on 127\.0\.0\.1:(\d+)", line)
            rest = int(match.group(1)) if match else rest
            if "gRPC server listening" in line:
                break
        assert rest, "the server did not start its REST API"
        connections = list(lingering_rest_connections(rest))
        time.sleep(0.3)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        assert time.monotonic() - started < 2 + 5  # the grace, and TensorFlow's teardown
        assert "Traceback" not in process.stderr.read()
    finally:
        for sock in connections:
            sock.close()
        if process.poll() is None:
            process.kill()


def test_server_on_a_busy_port_or_missing_base_path_exits_2(model_base, tmp_path, capsys):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        busy = sock.getsockname()[1]
        code = server_cli.run(server_cli.main, [f"--port={busy}", "--model_name=mixem",
                                                f"--model_base_path={model_base}"])
    assert code == 2
    assert "cannot listen" in capsys.readouterr().err
    code = server_cli.run(server_cli.main, ["--model_base_path", str(tmp_path / "nope")])
    assert code == 2
    assert "error: model base path" in capsys.readouterr().err
