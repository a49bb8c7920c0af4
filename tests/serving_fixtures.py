"""A tiny SavedModel with the export contract's signatures, for the serving tests and bench.

`serving_default` takes uint8 images [N, H, W, C] of any size, `serving_bytes` encoded
JPEG/PNG strings [N]; both resize to `size`×`size` grey, embed with a fixed random linear map
and return `cluster`, `probabilities`, `distances`, `embedding` for fixed random centroids.
`seed` changes the weights, so two versions give different answers. Images are resized one by
one (`tf.map_fn`, as per-image preprocessing is often written), which fails on an empty batch
with a graph-internal error, as many real graphs do.
"""

from __future__ import annotations

import io
import socket
from pathlib import Path

import numpy as np


def build_module(seed: int = 0, size: int = 8, clusters: int = 3, dim: int = 4):
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    weights = tf.constant(rng.normal(size=(size * size, dim)).astype("float32") / size)
    centroids = tf.constant(rng.normal(size=(clusters, dim)).astype("float32"))

    def head(images):
        resized = tf.map_fn(lambda image: tf.image.resize(image, (size, size)),
                            tf.cast(images, tf.float32))
        grey = tf.reduce_mean(resized, axis=-1, keepdims=True) / 255.0
        pixels = tf.reshape(grey, (-1, size * size))
        embedding = tf.matmul(pixels, weights)
        distances = tf.reduce_sum(tf.square(embedding[:, None, :] - centroids[None]), axis=-1)
        return {"cluster": tf.argmin(distances, axis=1, output_type=tf.int64),
                "probabilities": tf.nn.softmax(-distances, axis=-1),
                "distances": distances, "embedding": embedding}

    def decode(data):
        image = tf.io.decode_image(data, expand_animations=False)  # its own channels
        return tf.image.resize(image, (size, size))

    module = tf.Module()
    module.serve_images = tf.function(
        head, input_signature=[tf.TensorSpec([None, None, None, None], tf.uint8, name="images")])
    module.serve_bytes = tf.function(
        lambda image_bytes: head(tf.map_fn(decode, image_bytes, fn_output_signature=tf.float32)),
        input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    return module


def write_model(base: str | Path, version: int, seed: int = 0, **sizes) -> Path:
    """Saves the module as `base/version` (TF Serving layout); returns that folder."""
    import tensorflow as tf

    module = build_module(seed, **sizes)
    path = Path(base) / str(version)
    tmp = Path(base) / f".tmp-{version}"  # written aside, then renamed: never half-visible
    signatures = {"serving_default": module.serve_images.get_concrete_function(),
                  "serving_bytes": module.serve_bytes.get_concrete_function()}
    tf.saved_model.save(module, str(tmp), signatures=signatures)
    tmp.rename(path)
    return path


def png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).save(buffer, "PNG")
    return buffer.getvalue()


def png_header(height: int, width: int) -> bytes:
    """The first bytes of a PNG claiming height × width pixels, without pixel data: what a
    decompression bomb's header says, for the checks that must refuse it before decoding."""
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk
            + struct.pack(">I", zlib.crc32(chunk)))


# -- request helpers -------------------------------------------------------------------------
def lingering_rest_connections(port: int, model: str = "mixem") -> tuple:
    """(idle, kept, half): three connections to a REST port that stay open: one that never
    sends a byte, one kept alive after a request answered 200, one whose body never ends."""
    idle = socket.create_connection(("127.0.0.1", port))
    kept = socket.create_connection(("127.0.0.1", port))
    kept.sendall(f"GET /v1/models/{model} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert kept.recv(65536).startswith(b"HTTP/1.1 200")
    half = socket.create_connection(("127.0.0.1", port))
    half.sendall(f"POST /v1/models/{model}:predict HTTP/1.1\r\nHost: x\r\n"
                 "Content-Length: 1000\r\n\r\n{".encode())
    return idle, kept, half


def predict_request(inputs, signature="", model="mixem", version=None, output_filter=()):
    """A PredictRequest as a TF Serving client builds it."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    if signature:
        request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    for key, value in inputs.items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
    request.output_filter.extend(output_filter)
    return request


def outputs_of(response) -> dict:
    import tensorflow as tf

    return {key: tf.make_ndarray(value) for key, value in response.outputs.items()}


def own_outputs(path, signature, inputs) -> dict:
    """What the SavedModel itself returns, loaded and called in this process."""
    import tensorflow as tf

    function = tf.saved_model.load(str(path)).signatures[signature]
    outputs = function(**{key: tf.constant(value) for key, value in inputs.items()})
    return {key: value.numpy() for key, value in outputs.items()}


def images(n, h=10, w=12, c=3, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, c), dtype=np.uint8)
