"""Benchmarks whose results are recorded in docs/BENCHMARKS.md."""
