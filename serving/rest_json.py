"""TF Serving's REST JSON formats ↔ the gRPC API's request and response protos.

    POST .../:predict  {"instances": [...]} (row format) or {"inputs": ...} (columnar format)
    GET  ...           model status;   GET .../metadata   signature defs

JSON values become tensors of the signature's dtype; strings may be given as {"b64": "..."}
(encoded images for `serving_bytes`). Every request becomes the gRPC request proto and is
checked by the same servicer code, so statuses and messages are the gRPC API's; where TF
Serving's REST front end has its own check (json_tensor.cc, http_rest_api_handler.cc), its
message is used.
"""

from __future__ import annotations

import base64
import json

import grpc
import numpy as np
from google.protobuf import json_format
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    predict_pb2,
)

from serving.errors import ServingError, clip
from serving.service import DEFAULT_SIGNATURE, Servicers, check_input_names

__all__ = ["from_json", "metadata_json", "predict_json", "status_json", "to_json"]


def _invalid(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def from_json(value, dtype_enum: int) -> np.ndarray:
    """A JSON value (nested lists; {"b64": ...} for bytes) as an array of the given TF dtype,
    refused as TF Serving's json_tensor.cc refuses it: a float or a bool for an integer dtype,
    a bool or a string for a float dtype, invalid base64, a "b64" that is not a string
    (INVALID_ARGUMENT, with json_tensor.cc's message)."""
    import tensorflow as tf

    dtype = tf.dtypes.as_dtype(dtype_enum)
    if dtype == tf.string:
        return np.array(_to_bytes(value), dtype=object)
    try:
        array = np.asarray(value)
    except ValueError as error:  # ragged lists
        raise _invalid(f"the JSON value is not a dense tensor: {error}") from None
    accepted = "iu" if dtype.is_integer else "iuf" if dtype.is_floating else "b"
    if array.size and array.dtype.kind not in accepted:
        item = _first_wrong(np.asarray(value, dtype=object).reshape(-1), accepted)
        raise _invalid(f"JSON Value: {json.dumps(item)[:256]} Type: {_JSON_TYPES[type(item)]} "
                       f"is not of expected type: {dtype.name}")
    if dtype.is_integer and array.size and (array.min() < dtype.min or array.max() > dtype.max):
        raise _invalid(f"JSON Value out of the range of {dtype.name}: [{dtype.min}, "
                       f"{dtype.max}]")
    return array.astype(dtype.as_numpy_dtype)


# rapidjson's names of JSON types, as json_tensor.cc's messages give them.
_JSON_TYPES = {bool: "Boolean", int: "Number", float: "Number", str: "String", list: "Array",
               dict: "Object", type(None): "Null"}


def _first_wrong(items, accepted: str):
    """The first JSON value in `items` that is not of the numpy kinds `accepted`."""
    for item in items:
        if isinstance(item, bool) or np.asarray(item).dtype.kind not in accepted:
            return item
    return items[0]


def _to_bytes(item):
    if isinstance(item, list):
        return [_to_bytes(x) for x in item]
    if isinstance(item, str):
        return item.encode()
    if isinstance(item, dict) and set(item) == {"b64"} and isinstance(item["b64"], str):
        try:
            return base64.b64decode(item["b64"], validate=True)
        except ValueError:
            raise _invalid("Unable to base64 decode") from None
    raise _invalid(f"JSON Value: {json.dumps(item)[:256]} not formatted correctly for base64 "
                   f"data")


def to_json(array: np.ndarray):
    """Output arrays as JSON values; bytes become {"b64": ...}."""
    if array.dtype == object:
        encode = np.vectorize(lambda b: {"b64": base64.b64encode(b).decode()}, otypes=[object])
        return encode(array).tolist()
    return array.tolist()


def predict_request(name: str, version: int | None, signature: str, body: dict,
                    signature_def) -> tuple:
    """A PredictRequest from a REST body; returns (request, row_format)."""
    import tensorflow as tf

    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    if version is not None:
        request.model_spec.version.value = version
    request.model_spec.signature_name = signature
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
    check_input_names(signature_def, columns)
    for key, value in columns.items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(from_json(value, expected[key].dtype)))
    return request, "instances" in body


def _signature_name(body: dict) -> str:
    """The body's "signature_name" (json_tensor.cc, FillSignature: it must be a string)."""
    signature = body.get("signature_name", DEFAULT_SIGNATURE)
    if not isinstance(signature, str):
        raise _invalid(f"JSON Value: {clip(json.dumps(body), 256)} not formatted correctly. "
                       f"'signature_name' key must be a string value.")
    return signature


def predict_json(servicers: Servicers, name: str, version: int | None, label, body) -> dict:
    if not isinstance(body, dict):
        raise _invalid("the request body must be a JSON object")
    spec = predict_pb2.PredictRequest().model_spec
    spec.name = name
    if label:
        spec.version_label = label
    if version is not None:
        spec.version.value = version
    signature = _signature_name(body)
    with servicers.version_of(spec) as loaded:  # the signature's dtypes, or NOT_FOUND
        if signature not in loaded.signature_defs:  # http_rest_api_handler.cc, GetInfoMap
            raise _invalid(f'Serving signature name: "{clip(signature)}" not found in signature '
                           f"def")
        signature_def = loaded.signature_defs[signature]
    request, rows = predict_request(name, version, signature, body, signature_def)
    _, outputs = servicers.predict_arrays(request)
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
    if label:
        request.model_spec.version_label = label
    if version is not None:
        request.model_spec.version.value = version
    return json_format.MessageToDict(servicers.status(request), preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)


def metadata_json(servicers: Servicers, name: str, version, label) -> dict:
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = name
    if label:
        request.model_spec.version_label = label
    if version is not None:
        request.model_spec.version.value = version
    response = servicers.metadata(request)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signatures)
    return {"model_spec": _as_dict(response.model_spec),
            "metadata": {"signature_def": _as_dict(signatures)}}


def _as_dict(message) -> dict:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)
