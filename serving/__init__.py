"""A TF Serving-compatible gRPC server and client."""

from mixem_tf.cli import quiet_native_logs

quiet_native_logs()
