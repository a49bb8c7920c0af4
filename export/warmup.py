"""TF Serving's warm-up file, written at export: ``assets.extra/tf_serving_warmup_requests``.

A TFRecord file of ``PredictionLog`` records (tensorflow_serving/apis/prediction_log.proto), each
holding a ``PredictRequest``. TF Serving (and serving/warmup.py in our server) runs them on a
newly loaded version before it takes traffic, so the first real requests do not pay for the
graph's first-call optimisation (seconds under load). One request per signature, on real
images of the run's evaluation data: `serving_default` with pixels at the training shape and
`serving_bytes` with the same images as PNG.

    write_warmup(version_dir, warmup_requests(images, "mixem"))
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from serving.warmup import WARMUP_FILE

__all__ = ["warmup_requests", "write_warmup"]


def warmup_requests(images: np.ndarray, model_name: str) -> list:
    """PredictRequests for both signatures on uint8 `images` [N, H, W, C] (a few suffice)."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    def request(signature: str, name: str, value) -> predict_pb2.PredictRequest:
        message = predict_pb2.PredictRequest()
        message.model_spec.name = model_name
        message.model_spec.signature_name = signature
        message.inputs[name].CopyFrom(tf.make_tensor_proto(value))
        return message

    encoded = np.array([tf.io.encode_png(image).numpy() for image in images], dtype=object)
    return [request("serving_default", "images", images),
            request("serving_bytes", "image_bytes", encoded)]


def write_warmup(version_dir, requests) -> Path:
    """Writes `requests` as PredictionLog records to VERSION/assets.extra/...; returns the file."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    path = Path(version_dir) / WARMUP_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for request in requests:
            log = prediction_log_pb2.PredictionLog()
            log.predict_log.request.CopyFrom(request)
            writer.write(log.SerializeToString())
    return path
