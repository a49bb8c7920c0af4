"""TF Serving's REST API (`--rest_api_port`) over the same model and checks as gRPC, and what
hostile HTTP clients cannot do to it. Where TF Serving has the check, the expected message is
its own and the source file is named."""

import base64
import json
import os
import socket
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from serving import server as server_cli  # noqa: E402
from serving_fixtures import (  # noqa: E402
    images,
    lingering_rest_connections,
    own_outputs,
    png_bytes,
    png_header,
    write_model,
)

TIMEOUT_MS = 3000


@pytest.fixture(scope="module")
def rest(tmp_path_factory):
    base = tmp_path_factory.mktemp("rest") / "mixem"
    base.mkdir()
    path = write_model(base, 1)
    args = server_cli.build_parser().parse_args(
        ["--port=0", "--rest_api_port=0", "--model_name=mixem", f"--model_base_path={base}",
         "--file_system_poll_wait_seconds=0", "--max_images_per_request=4",
         "--max_request_bytes=1000000", f"--rest_api_timeout_in_ms={TIMEOUT_MS}",
         "--rest_api_max_json_values=50000"])
    running = server_cli.start(args)
    yield f"http://127.0.0.1:{running.rest.port}/v1/models", path
    running.stop(1)


def port_of(url):
    return int(url.split(":")[2].split("/")[0])


def call(url, body=None, raw=None):
    """(HTTP status, decoded JSON) of a GET, or of a POST when a body is given."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=30) as reply:
            return reply.status, json.load(reply)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def test_status_and_metadata(rest):
    url, _ = rest
    status, body = call(f"{url}/mixem")
    assert status == 200
    assert body["model_version_status"][0]["state"] == "AVAILABLE"
    assert body["model_version_status"][0]["version"] == "1"
    status, body = call(f"{url}/mixem/versions/1/metadata")
    assert status == 200
    assert set(body["metadata"]["signature_def"]["signature_def"]) == {"serving_default",
                                                                        "serving_bytes"}


def test_predict_row_format_equals_the_savedmodel(rest):
    url, path = rest
    x = images(2)
    status, body = call(f"{url}/mixem:predict", {"instances": x.tolist()})
    assert status == 200, body
    want = own_outputs(path, "serving_default", {"images": x})
    assert [row["cluster"] for row in body["predictions"]] == want["cluster"].tolist()
    np.testing.assert_allclose([row["probabilities"] for row in body["predictions"]],
                               want["probabilities"], rtol=1e-5, atol=1e-6)


def test_predict_columnar_b64_bytes(rest):
    url, path = rest
    x = images(2, seed=3)
    encoded = [png_bytes(image) for image in x]
    body = {"signature_name": "serving_bytes",
            "inputs": [{"b64": base64.b64encode(data).decode()} for data in encoded]}
    status, reply = call(f"{url}/mixem/versions/1:predict", body)
    assert status == 200, reply
    want = own_outputs(path, "serving_bytes",
                       {"image_bytes": np.array(encoded, dtype=object)})
    np.testing.assert_allclose(reply["outputs"]["distances"], want["distances"], rtol=1e-5,
                               atol=1e-6)


def b64(data):
    return {"b64": base64.b64encode(data).decode()}


DEEP = b'{"instances": ' + b"[" * 40_000 + b"]" * 40_000 + b"}"  # under the value limit
BYTES = "serving_bytes"


@pytest.mark.parametrize("url_tail, body, raw, status, message", [
    ("/other:predict", {"instances": [[[[0]]]]}, None, 404, "'other'"),
    ("/mixem/versions/9:predict", {"instances": [[[[0]]]]}, None, 404, "version 9"),
    # server_core.cc, GetModelVersionForLabel
    ("/mixem/labels/stable:predict", {"instances": [[[[0]]]]}, None, 400,
     "Unrecognized servable version label: stable"),
    # http_rest_api_handler.cc, GetInfoMap
    ("/mixem:predict", {"signature_name": "nope", "instances": [[[[0]]]]}, None, 400,
     'Serving signature name: "nope" not found in signature def'),
    ("/mixem:predict", {"instances": [[0, 1]]}, None, 400, "rank 4"),
    ("/mixem:predict", {"signature_name": BYTES, "instances": [b64(b"junk")]}, None, 400, ""),
    # json_tensor.cc: ParseJson, TypeError, JsonDecodeBase64Object, Base64FormatError
    ("/mixem:predict", None, b"{not json", 400, "JSON Parse error"),
    ("/mixem:predict", None, b"", 400, "JSON Parse error: The document is empty"),
    ("/mixem:predict", None, DEEP, 400, "JSON Parse error"),
    ("/mixem:predict", {"instances": [[[[0.5]]]]}, None, 400,
     "JSON Value: 0.5 Type: Number is not of expected type: uint8"),
    ("/mixem:predict", {"instances": [[[[True]]]]}, None, 400,
     "JSON Value: true Type: Boolean is not of expected type: uint8"),
    ("/mixem:predict", {"instances": [[[[300]]]]}, None, 400, "out of the range of uint8"),
    ("/mixem:predict", {"signature_name": BYTES, "instances": [{"b64": "%%%"}]}, None, 400,
     "Unable to base64 decode"),
    ("/mixem:predict", {"signature_name": BYTES, "instances": [{"b64": 123}]}, None, 400,
     'JSON Value: {"b64": 123} not formatted correctly for base64 data'),
    ("/mixem:predict", {"instances": np.zeros((5, 2, 2, 1), int).tolist()}, None, 429,
     "at most 4"),
    ("/mixem:predict", {"signature_name": BYTES, "instances": [b64(png_header(20000, 20000))]},
     None, 429, "20000 x 20000 pixels"),
    ("/mixem:predict", {"instances": np.zeros((1, 200, 200, 1), int).tolist()}, None, 429,
     "--rest_api_max_json_values"),
    # http_rest_api_handler.cc, ProcessRequest
    ("/mixem:explain", {"instances": []}, None, 400, "Malformed request: POST"),
], ids=["model", "version", "label", "signature", "rank", "corrupt", "json", "empty", "deep",
        "float pixels", "bool pixels", "range", "bad base64", "b64 number", "rows", "huge png",
        "json values", "path"])
def test_bad_requests_get_tf_servings_status_and_message(rest, url_tail, body, raw, status,
                                                          message):
    url, _ = rest
    got, reply = call(url + url_tail, body, raw)
    assert got == status, reply
    assert reply["error"] and message in reply["error"]
    assert call(f"{url}/mixem:predict", {"instances": images(1).tolist()})[0] == 200


BEYOND_INT64 = "99999999999999999999"


@pytest.mark.parametrize("tail", [":predict", "", "/metadata"])
def test_a_version_beyond_int64_is_a_400_without_a_traceback(rest, caplog, tail):
    url, _ = rest
    caplog.set_level("DEBUG")
    body = {"instances": images(1).tolist()} if tail == ":predict" else None
    status, reply = call(f"{url}/mixem/versions/{BEYOND_INT64}{tail}", body)
    # http_rest_api_util.cc, ParseModelInfo
    assert (status, reply) == (400, {"error": f"Failed to convert version: {BEYOND_INT64} to "
                                              f"numeric."})
    assert call(f"{url}/mixem/versions/0001{tail}", body)[0] == 200  # leading zeros: version 1
    assert "Traceback" not in caplog.text and not any(
        record.levelname == "ERROR" for record in caplog.records)


@pytest.mark.parametrize("url_tail, body, status, fragment", [
    ("/mixem:predict", {"inputs": {f"unexpected_{i:04d}": [0] for i in range(1000)}}, 400,
     "Sent extra: {unexpected_0000,"),
    ("/mixem:predict", {"inputs": {"x" * 100_000: [[[[0]]]]}}, 400,
     "input tensor alias not found in signature: xxx"),
    ("/mixem:predict", {"signature_name": "x" * 100_000, "instances": [[[[0]]]]}, 400,
     "Serving signature name"),
    # json_tensor.cc, FillSignature
    ("/mixem:predict", {"signature_name": list(range(30_000)), "instances": [[[[0]]]]}, 400,
     "'signature_name' key must be a string value."),
    ("/" + "x" * 10_000 + ":predict", {"instances": [[[[0]]]]}, 404, "servable not found"),
    ("/mixem/" + "x/" * 5_000 + ":predict", {"instances": [[[[0]]]]}, 400,
     "Malformed request: POST"),
], ids=["1,000 inputs", "long input", "long signature", "signature not a string",
        "long model", "long path"])
def test_messages_quoting_the_request_stay_short(rest, url_tail, body, status, fragment):
    from serving.errors import MAX_MESSAGE_CHARS

    url, _ = rest
    got, reply = call(url + url_tail, body)
    assert got == status, reply
    assert fragment in reply["error"] and len(reply["error"]) <= MAX_MESSAGE_CHARS
    assert call(f"{url}/mixem:predict", {"instances": images(1).tolist()})[0] == 200


def test_large_refused_bodies_are_freed_at_once(tmp_path):
    # Each body is read, parsed and decoded, then refused by the graph (not an image): what
    # it allocated must not stay held (by the refusal's traceback) until a garbage collection.
    psutil = pytest.importorskip("psutil")
    base = tmp_path / "mixem"
    base.mkdir()
    write_model(base, 1)
    running = server_cli.start(server_cli.build_parser().parse_args(
        ["--port=0", "--rest_api_port=0", "--model_name=mixem", f"--model_base_path={base}",
         "--file_system_poll_wait_seconds=0", f"--max_request_bytes={64 << 20}"]))
    url = f"http://127.0.0.1:{running.rest.port}/v1/models/mixem:predict"
    junk = base64.b64encode(np.random.default_rng(0).bytes(18 << 20)).decode()
    body = json.dumps({"signature_name": BYTES, "instances": [{"b64": junk}]}).encode()
    del junk
    process = psutil.Process()
    try:
        rss = []
        for _ in range(10):
            status, reply = call(url, raw=body)
            assert status == 400 and "image" in reply["error"], reply
            rss.append(process.memory_info().rss)
        # Held, the last 8 bodies would add at least 8 × (body + decoded bytes), over 300 MB;
        # freed, what remains is the allocator's noise in a long-lived test worker (tens of MB).
        assert rss[-1] - rss[1] < 4 * len(body), [r >> 20 for r in rss]
        assert call(url, {"instances": images(1).tolist()})[0] == 200
    finally:
        running.stop(1)


def exchange(port, data: bytes, wait=10.0) -> bytes:
    """Sends raw bytes, returns what comes back until the server closes or `wait` passes."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        sock.sendall(data)
        reply = b""
        try:
            while chunk := sock.recv(65536):
                reply += chunk
        except socket.timeout:
            pass
    return reply


def test_a_malformed_content_length_is_a_400_and_the_server_keeps_serving(rest):
    url, _ = rest
    reply = exchange(port_of(url), b"POST /v1/models/mixem:predict HTTP/1.1\r\nHost: x\r\n"
                                   b"Content-Length: abc\r\n\r\n{}")
    assert reply.startswith(b"HTTP/1.1 400")
    assert call(f"{url}/mixem:predict", {"instances": images(1).tolist()})[0] == 200


def test_a_large_body_is_refused_from_its_content_length_before_it_is_sent(rest):
    url, _ = rest
    started = time.monotonic()
    reply = exchange(port_of(url), b"POST /v1/models/mixem:predict HTTP/1.1\r\nHost: x\r\n"
                                   b"Content-Length: 50000000\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 429") and b"limit is 1000000" in reply
    assert time.monotonic() - started < TIMEOUT_MS / 1000  # answered, not timed out


def test_a_half_sent_body_times_out_with_504_and_a_trickled_header_is_closed(rest):
    url, _ = rest
    started = time.monotonic()
    reply = exchange(port_of(url), b"POST /v1/models/mixem:predict HTTP/1.1\r\nHost: x\r\n"
                                   b"Content-Length: 100\r\n\r\n{\"inst", wait=30)
    assert reply.startswith(b"HTTP/1.1 504") and b"rest_api_timeout_in_ms" in reply
    assert TIMEOUT_MS / 1000 <= time.monotonic() - started < 20
    started = time.monotonic()
    assert exchange(port_of(url), b"GET /v1/models/mixem HTTP/1.1\r\nHo", wait=30) == b""
    assert TIMEOUT_MS / 1000 <= time.monotonic() - started < 20  # closed by the server
    assert call(f"{url}/mixem")[0] == 200


def test_rest_connections_do_not_wait_for_delayed_acks(rest):
    # With Nagle's algorithm on the server's side of a kept-alive connection, a response's
    # body (uvicorn's second send) waits up to 40 ms for the client's delayed ACK of its header.
    import http.client

    psutil = pytest.importorskip("psutil")
    url, _ = rest
    port = port_of(url)
    client = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        for _ in range(2):  # the same connection, kept alive
            client.request("GET", "/v1/models/mixem")
            assert client.getresponse().read()
        mine = client.sock.getsockname()[1]
        server_side = [c.fd for c in psutil.Process().net_connections("tcp")
                       if c.laddr.port == port and c.raddr and c.raddr.port == mine]
        assert len(server_side) == 1
        sock = socket.socket(fileno=os.dup(server_side[0]))
        try:
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        finally:
            sock.close()
    finally:
        client.close()


def test_shutdown_finishes_within_the_grace_whatever_connections_stay_open(tmp_path):
    base = tmp_path / "mixem"
    base.mkdir()
    write_model(base, 1)
    running = server_cli.start(server_cli.build_parser().parse_args(
        ["--port=0", "--rest_api_port=0", "--model_name=mixem", f"--model_base_path={base}",
         "--file_system_poll_wait_seconds=0"]))  # request timeout 30 s, far past the grace
    port = running.rest.port
    idle, kept, half = lingering_rest_connections(port)
    time.sleep(0.3)
    started = time.monotonic()
    running.stop(1.0)
    assert time.monotonic() - started < 4.0
    for sock in (idle, kept, half):
        sock.settimeout(5)
    rest = {sock: b"".join(iter(lambda: sock.recv(65536), b"")) for sock in (idle, kept, half)}
    assert rest[idle] == b""  # closed by the server without an answer
    assert b"HTTP/1.1" not in rest[kept]  # (the rest of its first answer's body), then closed
    assert rest[half].startswith(b"HTTP/1.1 503")  # cancelled after the grace, and told
    for sock in (idle, kept, half):
        sock.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
