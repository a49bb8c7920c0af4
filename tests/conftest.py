"""Test-wide settings: quiet TensorFlow, and OpenMP threads that sleep rather than spin (so
scikit-learn's K-means does not fight TensorFlow's threads for the two CPU cores)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
