"""TF Serving's REST API (``--rest_api_port``) over the same servicers as the gRPC API.

    GET  /v1/models/NAME[/versions/V]             → model status
    GET  /v1/models/NAME[/versions/V]/metadata    → signature defs
    POST /v1/models/NAME[/versions/V]:predict     → {"instances": [...]} (row format) or
                                                     {"inputs": ...} (columnar format)

JSON values become tensors of the signature's dtype; strings may be given as {"b64": "..."}
(encoded images for `serving_bytes`). Every request is turned into the gRPC request proto and
checked by the same code, so statuses and messages are the gRPC API's; the HTTP status is the
usual mapping of the gRPC code (400, 404, 429, 500, ...) with ``{"error": message}``.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import numpy as np
from google.protobuf import json_format
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    predict_pb2,
)

from serving.service import DEFAULT_SIGNATURE, Servicers, ServingError

_PATH = re.compile(r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+))?"
                   r"(?:/labels/(?P<label>[^/:]+))?(?P<verb>/metadata|:predict)?$")
HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.NOT_FOUND: 404, grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNIMPLEMENTED: 501, grpc.StatusCode.UNAVAILABLE: 503,
}


def _invalid(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def from_json(value, dtype_enum: int) -> np.ndarray:
    """A JSON value (nested lists, {"b64": ...} for bytes) as an array of the given TF dtype."""
    import tensorflow as tf

    dtype = tf.dtypes.as_dtype(dtype_enum)
    if dtype == tf.string:
        def to_bytes(item):
            if isinstance(item, list):
                return [to_bytes(x) for x in item]
            if isinstance(item, dict) and set(item) == {"b64"}:
                return base64.b64decode(item["b64"], validate=True)
            if isinstance(item, str):
                return item.encode()
            raise _invalid(f"expected a string or {{\"b64\": ...}}, got {type(item).__name__}")

        return np.array(to_bytes(value), dtype=object)
    try:
        return np.asarray(value, dtype=dtype.as_numpy_dtype)
    except (TypeError, ValueError, OverflowError) as error:
        raise _invalid(f"cannot read the value as {dtype.name}: {error}") from None


def to_json(array: np.ndarray):
    """Output arrays as JSON values; bytes become {"b64": ...}."""
    if array.dtype == object:
        encode = np.vectorize(lambda b: {"b64": base64.b64encode(b).decode()}, otypes=[object])
        return encode(array).tolist()
    return array.tolist()


def predict_request(name: str, version: str | None, body: dict, signature_def) -> tuple:
    """A PredictRequest from a REST body; returns (request, row_format)."""
    import tensorflow as tf

    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    if version is not None:
        request.model_spec.version.value = int(version)
    request.model_spec.signature_name = body.get("signature_name", DEFAULT_SIGNATURE)
    expected = signature_def.inputs
    if ("instances" in body) == ("inputs" in body):
        raise _invalid('the body must have exactly one of "instances" or "inputs"')
    if "instances" in body:
        instances = body["instances"]
        if not isinstance(instances, list) or not instances:
            raise _invalid('"instances" must be a non-empty list')
        if all(isinstance(i, dict) and "b64" not in i for i in instances):
            columns = {key: [i.get(key) for i in instances] for key in instances[0]}
        elif len(expected) == 1:
            columns = {next(iter(expected)): instances}
        else:
            raise _invalid(f"the signature takes {sorted(expected)}: give each instance as "
                           f"an object with those keys")
    else:
        inputs = body["inputs"]
        if isinstance(inputs, dict) and "b64" not in inputs:
            columns = inputs
        elif len(expected) == 1:
            columns = {next(iter(expected)): inputs}
        else:
            raise _invalid(f'"inputs" must be an object with keys {sorted(expected)}')
    for key, value in columns.items():
        if key not in expected:
            raise _invalid(f"unknown input {key!r}; the signature takes {sorted(expected)}")
        request.inputs[key].CopyFrom(tf.make_tensor_proto(from_json(value, expected[key].dtype)))
    return request, "instances" in body


def predict_json(servicers: Servicers, name: str, version, label, body) -> dict:
    import tensorflow as tf

    if not isinstance(body, dict):
        raise _invalid("the request body must be a JSON object")
    spec = predict_pb2.PredictRequest().model_spec
    spec.name = name
    spec.version_label = label or ""
    if version is not None:
        spec.version.value = int(version)
    signature = body.get("signature_name", DEFAULT_SIGNATURE)
    with servicers.version_of(spec) as loaded:  # the signature's dtypes, or NOT_FOUND
        if signature not in loaded.signature_defs:
            raise _invalid(f"unknown signature {signature!r}; model {name!r} has "
                           f"{sorted(loaded.signature_defs)}")
        signature_def = loaded.signature_defs[signature]
    request, rows = predict_request(name, version, body, signature_def)
    response = servicers.predict(request)
    outputs = {key: tf.make_ndarray(value) for key, value in response.outputs.items()}
    if not rows:
        if len(outputs) == 1:
            return {"outputs": to_json(next(iter(outputs.values())))}
        return {"outputs": {key: to_json(value) for key, value in outputs.items()}}
    columns = {key: to_json(value) for key, value in outputs.items()}
    if len(columns) == 1:
        return {"predictions": next(iter(columns.values()))}
    count = len(next(iter(columns.values())))
    return {"predictions": [{key: column[i] for key, column in columns.items()}
                            for i in range(count)]}


def status_json(servicers: Servicers, name: str, version, label) -> dict:
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = name
    request.model_spec.version_label = label or ""
    if version is not None:
        request.model_spec.version.value = int(version)
    return json_format.MessageToDict(servicers.status(request), preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)


def metadata_json(servicers: Servicers, name: str, version, label) -> dict:
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = name
    request.model_spec.version_label = label or ""
    if version is not None:
        request.model_spec.version.value = int(version)
    response = servicers.metadata(request)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signatures)
    return {"model_spec": _as_dict(response.model_spec),
            "metadata": {"signature_def": _as_dict(signatures)}}


def _as_dict(message) -> dict:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def handler_for(servicers: Servicers, max_body_bytes: int):
    """A BaseHTTPRequestHandler class answering TF Serving's REST paths for `servicers`."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            self._answer("GET")

        def do_POST(self):
            self._answer("POST")

        def log_message(self, format, *args):  # quiet: gRPC does not log each request either
            pass

        def _answer(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            try:
                if length > max_body_bytes:
                    raise ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                       f"request body of {length} bytes; the limit is "
                                       f"{max_body_bytes}")
                raw = self.rfile.read(length) if length else b""
                match = _PATH.match(self.path)
                verb = match and match["verb"]
                if match is None or (method == "POST") != (verb == ":predict"):
                    raise ServingError(grpc.StatusCode.NOT_FOUND,
                                       f"no such endpoint: {method} {self.path}")
                where = (servicers, match["name"], match["version"], match["label"])
                if verb == ":predict":
                    try:
                        body = json.loads(raw)
                    except ValueError as error:
                        raise _invalid(f"the body is not JSON: {error}") from None
                    result = predict_json(*where, body)
                elif verb == "/metadata":
                    result = metadata_json(*where)
                else:
                    result = status_json(*where)
                self._send(200, result)
            except ServingError as error:
                self._send(HTTP_STATUS.get(error.code, 500), {"error": str(error)})
            except Exception as error:  # the server keeps serving
                self._send(500, {"error": f"{type(error).__name__}: {error}"})

        def _send(self, status: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


class RestServer:
    """The REST API on `host:port` in a background thread; `port` is the bound port."""

    def __init__(self, servicers: Servicers, host: str, port: int, max_body_bytes: int):
        try:
            self._http = ThreadingHTTPServer((host, port), handler_for(servicers, max_body_bytes))
        except OSError as error:
            raise ValueError(f"cannot listen on {host}:{port} for REST: {error}") from None
        self._http.daemon_threads = False  # shutdown waits for requests in flight
        self.port = self._http.server_address[1]
        self._thread = threading.Thread(target=self._http.serve_forever, name="rest",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stops accepting; waits for the requests being answered."""
        self._http.shutdown()
        self._http.server_close()
