"""Request limits, checked from a TensorProto's header before anything is allocated.

A PredictRequest's tensor says its shape in a few bytes and may hold a single repeated value
that TensorFlow broadcasts to that shape, so a 50-byte message can claim gigabytes. Every check
here reads only the shape, the dtype, the value counts and encoded images' headers:

- the shape: a known rank and no negative dimension, else INVALID_ARGUMENT ("tensor parsing
  error", the message TF Serving gives when ``Tensor::FromProto`` refuses a proto,
  tfrt_predict_util.cc); more values than the shape holds, or ``tensor_content`` of the wrong
  length, likewise;
- rows (the first dimension) ≤ ``max_rows``; elements × the dtype's size (strings: their
  bytes plus ``STRING_ELEMENT_BYTES`` per element) ≤ ``max_bytes``;
  each image's height × width ≤ ``max_image_pixels`` (a rank-4 input is images
  ``[N, H, W, C]``; a string is an encoded image when its header says so): RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import grpc

from serving.errors import ServingError
from serving.image_size import image_size

__all__ = ["DEFAULT_MAX_IMAGE_PIXELS", "Limits", "check_tensor"]

DEFAULT_MAX_IMAGE_PIXELS = 4096 * 4096  # a 16-megapixel photo; decoded RGBA float ≈ 256 MB
STRING_ELEMENT_BYTES = 32  # what each string element costs beyond its bytes (a tf.tstring: 24)

# The TensorProto field holding each dtype's values (types_pb2 enum names).
_VALUE_FIELDS = {
    "DT_FLOAT": "float_val", "DT_DOUBLE": "double_val", "DT_INT32": "int_val",
    "DT_UINT8": "int_val", "DT_INT16": "int_val", "DT_INT8": "int_val", "DT_UINT16": "int_val",
    "DT_HALF": "half_val", "DT_BFLOAT16": "half_val", "DT_INT64": "int64_val",
    "DT_UINT32": "uint32_val", "DT_UINT64": "uint64_val", "DT_BOOL": "bool_val",
    "DT_STRING": "string_val",
}


@dataclass(frozen=True)
class Limits:
    """What one request may claim (the server's flags of the same meaning)."""

    max_rows: int = 1024  # --max_images_per_request
    max_bytes: int = 64 << 20  # --max_request_bytes: the message, and each decoded tensor
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS  # --max_image_pixels


def _invalid(name: str, why: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"tensor parsing error: {name}: {why}")


def _exhausted(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED, message)


def check_tensor(name: str, tensor, limits: Limits) -> list[int]:
    """Checks one request tensor's header against `limits`; returns its dimensions.

    Raises:
        ServingError: INVALID_ARGUMENT for a malformed header, RESOURCE_EXHAUSTED for one that
            claims more than the limits allow.
    """
    from tensorflow.core.framework import types_pb2

    if tensor.tensor_shape.unknown_rank:
        raise _invalid(name, "the shape has an unknown rank")
    dims = [d.size for d in tensor.tensor_shape.dim]
    if any(size < 0 for size in dims):
        raise _invalid(name, f"shape {dims} has a negative dimension")
    elements = math.prod(dims)  # Python integers: no overflow to a negative product
    if dims and dims[0] > limits.max_rows:
        raise _exhausted(f"input {name!r} has {dims[0]} rows; this server takes at most "
                         f"{limits.max_rows} per request")
    if len(dims) == 4 and dims[1] * dims[2] > limits.max_image_pixels:
        raise _exhausted(f"input {name!r}: images of {dims[1]} x {dims[2]} pixels; the limit "
                         f"is {limits.max_image_pixels} pixels per image")
    dtype = types_pb2.DataType.Name(tensor.dtype)
    if dtype == "DT_STRING":
        values = tensor.string_val
        cost = elements * STRING_ELEMENT_BYTES + sum(len(v) for v in values)
    else:
        import tensorflow as tf

        cost = elements * tf.dtypes.as_dtype(tensor.dtype).size
        if tensor.tensor_content and len(tensor.tensor_content) != cost:
            raise _invalid(name, f"tensor_content holds {len(tensor.tensor_content)} bytes; "
                                 f"shape {dims} of {dtype} needs {cost}")
        field = _VALUE_FIELDS.get(dtype)
        values = getattr(tensor, field) if field else ()
    if cost > limits.max_bytes:
        raise _exhausted(f"input {name!r} of shape {dims} ({dtype}) takes {cost} bytes; the "
                         f"limit is {limits.max_bytes}")
    if len(values) > elements:
        raise _invalid(name, f"{len(values)} values for shape {dims}")
    if dtype == "DT_STRING":
        _check_images(name, values, limits)
    return dims


def _check_images(name: str, values, limits: Limits) -> None:
    """Each encoded image's decoded size, from its header."""
    for index, data in enumerate(values):
        size = image_size(data)
        if size is not None and size[0] * size[1] > limits.max_image_pixels:
            raise _exhausted(f"input {name!r}[{index}]: an image of {size[0]} x {size[1]} "
                             f"pixels; the limit is {limits.max_image_pixels} pixels per image")
