"""Benchmarks whose results are recorded in docs/BENCHMARKS.md."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# scikit-learn's OpenMP threads sleep instead of spinning while waiting: K-means read-outs run
# up to 30x faster on a machine that is busy with anything else (TensorFlow's threads included).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from mixem_tf.cli import quiet_native_logs

quiet_native_logs()
