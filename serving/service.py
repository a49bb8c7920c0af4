"""The gRPC servicers of TF Serving's API: PredictionService (Predict, GetModelMetadata) and
ModelService (GetModelStatus), with request validation and gRPC status mapping.

Every request is checked before the graph runs, and before its tensors are read
(serving/limits.py): model spec (INVALID_ARGUMENT, NOT_FOUND), signature (FAILED_PRECONDITION),
input names, dtypes, shapes, output_filter (INVALID_ARGUMENT), rows, bytes and image pixels
(RESOURCE_EXHAUSTED); statuses and messages follow TF Serving's (the source file is named where
a check is). A run-time ``tf.errors.InvalidArgumentError`` (e.g. corrupt image
bytes) becomes INVALID_ARGUMENT, anything else INTERNAL; the server keeps serving either way.
A request of 0 rows is answered with empty outputs shaped from the signature, without running
the graph (TF Serving runs it, and gets empty outputs from a graph that handles an empty batch;
one that does not would answer a graph-internal error). Messages quote request content
clipped (serving/errors.py), and a refused request's frames are cleared at once, so its
tensors are freed now and not when the garbage collector next runs.
"""

from __future__ import annotations

import logging
import re
import traceback
from dataclasses import dataclass, field

import grpc
import numpy as np
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving.errors import MAX_MESSAGE_CHARS, ServingError, clip, name_some
from serving.limits import Limits, check_tensor
from serving.models import ModelVersions, VersionNotFound

log = logging.getLogger("serving")

DEFAULT_SIGNATURE = "serving_default"


@dataclass
class ServingOptions:
    """Limits and batching of the servicers (the server's flags)."""

    limits: Limits = field(default_factory=Limits)
    batcher: object | None = None  # serving.batching.Batcher, or None to run each request alone


def _dtype_name(enum_value: int) -> str:
    from tensorflow.core.framework import types_pb2

    return types_pb2.DataType.Name(enum_value)


def _shape_text(shape_proto) -> str:
    if shape_proto.unknown_rank:
        return "<unknown rank>"
    return "[" + ", ".join("None" if d.size < 0 else str(d.size) for d in shape_proto.dim) + "]"


def check_input_names(signature_def, given) -> None:
    """INVALID_ARGUMENT unless the input names `given` are the signature's, with TF Serving's
    messages (predict_util.cc: VerifyRequestInputsSize, PreProcessPrediction), naming at most
    a few of the names sent."""
    expected = sorted(signature_def.inputs)
    given = sorted(given)
    if given == expected:
        return
    extra = [name for name in given if name not in signature_def.inputs]
    if len(given) == len(expected):
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"input tensor alias not found in signature: {clip(extra[0])}. "
                           f"Inputs expected to be in the set {{{name_some(expected)}}}.")
    missing = [name for name in expected if name not in given]
    raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                       f"input size does not match signature: {len(given)}!={len(expected)} "
                       f"len({{{name_some(given)}}}) != len({{{name_some(expected)}}}). "
                       f"Sent extra: {{{name_some(extra)}}}. Missing but required: "
                       f"{{{name_some(missing)}}}.")


def check_inputs(signature_def, tensors, limits: Limits) -> dict:
    """Checks request tensors against the SignatureDef and `limits` from their headers alone,
    then (and only then) reads them; returns {name: numpy array}."""
    import tensorflow as tf

    expected = signature_def.inputs
    check_input_names(signature_def, tensors)
    for name, info in expected.items():
        tensor = tensors[name]
        if tensor.dtype != info.dtype:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"input {name!r} must be {_dtype_name(info.dtype)}, got "
                               f"{_dtype_name(tensor.dtype)}")
        dims = [d.size for d in tensor.tensor_shape.dim]
        if not info.tensor_shape.unknown_rank:
            want = [d.size for d in info.tensor_shape.dim]
            if len(dims) != len(want) or any(w >= 0 and w != d for w, d in zip(want, dims)):
                shape = _shape_text(info.tensor_shape)
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                                   f"input {name!r} must have shape {shape} (rank {len(want)}), "
                                   f"got {clip(dims)} (rank {len(dims)})")
        check_tensor(name, tensor, limits)
    arrays = {}
    for name in expected:
        try:
            arrays[name] = tf.make_ndarray(tensors[name])
        except Exception as error:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"tensor parsing error: {name}: {error}") from None
    return arrays


def check_output_filter(output_filter, signature_def) -> None:
    """INVALID_ARGUMENT for an unknown or repeated output name (TF Serving's predict_util.cc)."""
    seen = set()
    for alias in output_filter:
        if alias not in signature_def.outputs:
            names = ",".join(sorted(signature_def.outputs))
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"output tensor alias not found in signature: {clip(alias)} "
                               f"Outputs expected to be in the set {{{names}}}.")
        if alias in seen:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"duplicate output tensor alias: {clip(alias)}")
        seen.add(alias)


def runtime_message(error) -> str:
    """A TensorFlow run-time error's message without the graph-execution boilerplate and the
    graph node it happened in (``[[{{node ...}}]]``)."""
    noise = ("Graph execution error", "Detected at node", "<stack traces unavailable>")
    lines = [_NODE.sub("", line).strip() for line in error.message.splitlines()]
    useful = [line for line in lines if line and not line.startswith(noise)]
    return " ".join(useful) or error.message


_NODE = re.compile(r"\s*\[\[\{\{node [^}]*\}\}\]\]")


def empty_outputs(signature_def, names) -> dict:
    """The outputs `names` of a 0-row request: arrays of 0 rows with the signature's dtypes and
    the signature's other dimensions (a dimension the signature leaves open is 0)."""
    import tensorflow as tf

    outputs = {}
    for name in names:
        info = signature_def.outputs[name]
        dims = [] if info.tensor_shape.unknown_rank else [d.size for d in info.tensor_shape.dim]
        shape = [0] + [max(size, 0) for size in dims[1:]]
        outputs[name] = np.zeros(shape, tf.dtypes.as_dtype(info.dtype).as_numpy_dtype)
    return outputs


def batch_rows(arrays: dict) -> int | None:
    """The common leading dimension of the inputs, or None when they have none in common."""
    sizes = {int(v.shape[0]) for v in arrays.values() if np.ndim(v) > 0}
    if len(sizes) == 1 and all(np.ndim(v) > 0 for v in arrays.values()):
        return sizes.pop()
    return None


def mergeable(signature_def) -> bool:
    """Whether every input's first dimension is free, so requests can be concatenated."""
    return all(not info.tensor_shape.unknown_rank and info.tensor_shape.dim
               and info.tensor_shape.dim[0].size < 0 for info in signature_def.inputs.values())


class Servicers:
    """Both services of one model; `prediction` and `model` are the objects gRPC serves."""

    def __init__(self, models: ModelVersions, options: ServingOptions | None = None):
        self.models = models
        self.options = options or ServingOptions()
        self.prediction = _PredictionService(self)
        self.model = _ModelService(self)

    # -- shared checks ----------------------------------------------------------------------
    def check_spec(self, model_spec):
        """The ModelSpec checks of TF Serving's ServerCore::ServableRequestFromModelSpec
        (server_core.cc): a name (INVALID_ARGUMENT), no version label (this server defines
        none: INVALID_ARGUMENT), and this server's model (NOT_FOUND)."""
        if not model_spec.name:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               "ModelSpec has no name specified.")
        if model_spec.WhichOneof("version_choice") == "version_label":
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"Unrecognized servable version label: "
                               f"{clip(model_spec.version_label)}")
        if model_spec.name != self.models.name:
            raise ServingError(grpc.StatusCode.NOT_FOUND,
                               f"servable not found: model {clip(repr(model_spec.name))} (this "
                               f"server serves {self.models.name!r})")

    def version_of(self, model_spec):
        """The held version for a ModelSpec (a context manager); NOT_FOUND if not served."""
        self.check_spec(model_spec)
        version = model_spec.version.value if model_spec.HasField("version") else None
        try:
            return self.models.acquire(version)
        except VersionNotFound as error:
            raise ServingError(grpc.StatusCode.NOT_FOUND, str(error)) from None

    # -- Predict ----------------------------------------------------------------------------
    def predict(self, request):
        import tensorflow as tf

        response, outputs = self.predict_arrays(request)
        for key, value in outputs.items():
            response.outputs[key].CopyFrom(tf.make_tensor_proto(value))
        return response

    def predict_arrays(self, request) -> tuple:
        """Checks and runs a PredictRequest; returns (a PredictResponse holding only its
        model_spec, {output name: numpy array} as the output_filter asks). REST answers
        from the arrays, without a round trip through TensorProtos."""
        import tensorflow as tf

        signature = request.model_spec.signature_name or DEFAULT_SIGNATURE
        with self.version_of(request.model_spec) as loaded:
            if signature not in loaded.signature_defs:  # predict_util.cc: FAILED_PRECONDITION
                raise ServingError(grpc.StatusCode.FAILED_PRECONDITION,
                                   f'Serving signature key "{clip(signature)}" not found. Model '
                                   f"{loaded.name!r} has {sorted(loaded.signature_defs)}")
            signature_def = loaded.signature_defs[signature]
            check_output_filter(request.output_filter, signature_def)
            arrays = check_inputs(signature_def, request.inputs, self.options.limits)
            rows = batch_rows(arrays)
            try:
                if rows == 0:
                    outputs = empty_outputs(signature_def, request.output_filter
                                            or signature_def.outputs)
                elif self.options.batcher is not None and rows and mergeable(signature_def):
                    outputs = self.options.batcher.submit(loaded, signature, arrays).result()
                else:
                    outputs = loaded.run(signature, arrays)
            except tf.errors.InvalidArgumentError as error:
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                                   runtime_message(error)) from None
            response = predict_pb2.PredictResponse()
            response.model_spec.name = loaded.name
            response.model_spec.version.value = loaded.version
            response.model_spec.signature_name = signature
        return response, {key: outputs[key] for key in request.output_filter or outputs}

    # -- GetModelMetadata -------------------------------------------------------------------
    def metadata(self, request):
        fields = list(request.metadata_field)
        if not fields:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               "GetModelMetadataRequest must name at least one metadata_field "
                               "(supported: 'signature_def')")
        unsupported = sorted(set(fields) - {"signature_def"})
        if unsupported:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"metadata_field {{{name_some(unsupported)}}} not supported "
                               f"(supported: 'signature_def')")
        with self.version_of(request.model_spec) as loaded:
            signature_map = get_model_metadata_pb2.SignatureDefMap()
            for key, value in loaded.signature_defs.items():
                signature_map.signature_def[key].CopyFrom(value)
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            response.model_spec.name = loaded.name
            response.model_spec.version.value = loaded.version
        response.metadata["signature_def"].Pack(signature_map)
        return response

    # -- GetModelStatus ---------------------------------------------------------------------
    def status(self, request):
        """As TF Serving's get_model_status_impl.cc: no ModelSpec is INVALID_ARGUMENT; an
        unknown (or empty) name or version is NOT_FOUND; a version label is not looked at."""
        if not request.HasField("model_spec"):
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")
        spec = request.model_spec
        if spec.name != self.models.name:
            raise ServingError(grpc.StatusCode.NOT_FOUND,
                               f"Could not find any versions of model {clip(spec.name)}")
        statuses = self.models.statuses()
        if spec.HasField("version"):
            statuses = [(v, s) for v, s in statuses if v == spec.version.value]
        if not statuses:
            wanted = (f"version {spec.version.value}" if spec.HasField("version")
                      else "any versions")
            raise ServingError(grpc.StatusCode.NOT_FOUND,
                               f"Could not find {wanted} of model {spec.name}")
        state = get_model_status_pb2.ModelVersionStatus.State
        response = get_model_status_pb2.GetModelStatusResponse()
        for version, state_name in statuses:
            entry = response.model_version_status.add(version=version)
            entry.state = state.Value(state_name)
            entry.status.SetInParent()  # error_code OK, as TF Serving reports a healthy version
        return response


def forget_request(error: BaseException) -> None:
    """Clears the finished frames of `error`'s traceback, so the request they hold (a body, its
    tensors: tens of MB) is freed now, not when the garbage collector breaks the cycle between
    the exception and those frames."""
    traceback.clear_frames(error.__traceback__)


def internal_message(error: Exception) -> str:
    """The message of an unexpected failure (INTERNAL), clipped."""
    return clip(f"{type(error).__name__}: {error}", MAX_MESSAGE_CHARS)


def _answer(method):
    """Wraps a handler: ServingError → its status, any other failure → INTERNAL."""

    def handler(self, request, context):
        try:
            return method(self.servicers, request)
        except ServingError as error:
            forget_request(error)
            code, message = error.code, str(error)
        except Exception as error:
            log.exception("%s failed", method.__name__)
            forget_request(error)
            code, message = grpc.StatusCode.INTERNAL, internal_message(error)
        context.abort(code, message)

    handler.__name__ = method.__name__
    return handler


def _unimplemented(name: str):
    """A handler answering UNIMPLEMENTED in one log-free line (gRPC's default handler raises
    and logs a traceback on every call)."""

    def handler(self, request, context):
        context.abort(grpc.StatusCode.UNIMPLEMENTED,
                      f"{name} is not implemented by this server (use Predict)")

    handler.__name__ = name
    return handler


class _PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, servicers: Servicers):
        self.servicers = servicers

    Predict = _answer(Servicers.predict)
    GetModelMetadata = _answer(Servicers.metadata)
    Classify = _unimplemented("Classify")
    Regress = _unimplemented("Regress")
    MultiInference = _unimplemented("MultiInference")


class _ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, servicers: Servicers):
        self.servicers = servicers

    GetModelStatus = _answer(Servicers.status)
    HandleReloadConfigRequest = _unimplemented("HandleReloadConfigRequest")
