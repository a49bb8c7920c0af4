"""The versions of the libraries a run or an export depends on (recorded with each)."""

from __future__ import annotations

import importlib.metadata as metadata
import sys

__all__ = ["library_versions"]

PACKAGES = ("keras", "numpy", "scipy", "scikit-learn", "tensorflow", "jax", "mixem-tf")


def library_versions() -> dict:
    """{package: version} of Python and every installed package of `PACKAGES`."""
    versions = {"python": sys.version.split()[0]}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return versions
