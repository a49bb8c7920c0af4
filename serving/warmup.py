"""Replaying a version's warm-up file (TF Serving's ``assets.extra/tf_serving_warmup_requests``,
PredictionLog records; export/warmup.py writes it) before the version takes traffic.

As TF Serving's saved_model_warmup_util.cc: at most `MAX_RECORDS` records, each run once;
Predict records only (this server has no Classify, Regress or MultiInference, so such records
are skipped); a record that fails makes the load fail, so a broken version never serves.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["MAX_RECORDS", "WARMUP_FILE", "replay_warmup"]

WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"
MAX_RECORDS = 1000  # TF Serving's kMaxNumRecords
DEFAULT_SIGNATURE = "serving_default"


def replay_warmup(loaded) -> int:
    """Runs the warm-up requests of `loaded` (a serving.models.LoadedVersion); returns how many
    ran (0 without a warm-up file).

    Raises:
        ValueError: a record is not a PredictionLog, or names an unknown signature or inputs.
        tf.errors.OpError: a request failed in the graph.
    """
    path = Path(loaded.path) / WARMUP_FILE
    if not path.is_file():
        return 0
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    count = 0
    for record in tf.data.TFRecordDataset(str(path)).take(MAX_RECORDS):
        log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        if log.WhichOneof("log_type") != "predict_log":
            continue
        request = log.predict_log.request
        signature = request.model_spec.signature_name or DEFAULT_SIGNATURE
        expected = loaded.signature_defs.get(signature)
        if expected is None or set(request.inputs) != set(expected.inputs):
            raise ValueError(f"{path}: a warm-up request for signature {signature!r} with "
                             f"inputs {sorted(request.inputs)} does not fit the model")
        loaded.run(signature, {k: tf.make_ndarray(v) for k, v in request.inputs.items()})
        count += 1
    return count
