"""TF Serving's REST API (`--rest_api_port`) over the same model and checks as gRPC."""

import base64
import json
import urllib.error
import urllib.request

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from serving import server as server_cli  # noqa: E402
from serving_fixtures import images, own_outputs, png_bytes, write_model  # noqa: E402


@pytest.fixture(scope="module")
def rest(tmp_path_factory):
    base = tmp_path_factory.mktemp("rest") / "mixem"
    base.mkdir()
    path = write_model(base, 1)
    args = server_cli.build_parser().parse_args(
        ["--port=0", "--rest_api_port=0", "--model_name=mixem", f"--model_base_path={base}",
         "--file_system_poll_wait_seconds=0", "--max_images_per_request=4"])
    running = server_cli.start(args)
    yield f"http://127.0.0.1:{running.rest.port}/v1/models", path
    running.stop(1)


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


@pytest.mark.parametrize("url_tail, body, raw, status", [
    ("/other:predict", {"instances": [[[[0]]]]}, None, 404),
    ("/mixem/versions/9:predict", {"instances": [[[[0]]]]}, None, 404),
    ("/mixem:predict", {"signature_name": "nope", "instances": [[[[0]]]]}, None, 400),
    ("/mixem:predict", {"instances": [[0, 1]]}, None, 400),  # rank 2, signature wants 4
    ("/mixem:predict", {"signature_name": "serving_bytes",
                        "instances": [{"b64": base64.b64encode(b"junk").decode()}]}, None, 400),
    ("/mixem:predict", None, b"{not json", 400),
    ("/mixem:predict", {"instances": np.zeros((5, 2, 2, 1), int).tolist()}, None, 429),
    ("/mixem:explain", {"instances": []}, None, 404),
], ids=["model", "version", "signature", "rank", "corrupt", "json", "rows", "path"])
def test_bad_requests_get_http_statuses(rest, url_tail, body, raw, status):
    url, _ = rest
    got, reply = call(url + url_tail, body, raw)
    assert got == status, reply
    assert reply["error"]
    assert call(f"{url}/mixem:predict", {"instances": images(1).tolist()})[0] == 200
