"""Benchmarks whose results are recorded in docs/BENCHMARKS.md."""

from mixem_tf.cli import quiet_native_logs

quiet_native_logs()  # before anything imports TensorFlow, as in every entry-point package
