"""Benchmarks whose results are recorded in docs/BENCHMARKS.md."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
