"""Export trained runs (SavedModel in TF Serving layout, ONNX)."""

from mixem_tf.cli import quiet_native_logs

quiet_native_logs()
