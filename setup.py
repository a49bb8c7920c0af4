"""Installs the mixem_tf library and its command-line packages (`pip install -e .`)."""
from pathlib import Path

from setuptools import find_packages, setup


def _requirements(name):
    lines = Path(__file__).with_name(name).read_text().splitlines()
    reqs = [line.split("#")[0].strip() for line in lines]
    return [r for r in reqs if r and not r.startswith("-r")]


setup(
    name="mixem-tf",
    version="0.1.0",
    description="Unsupervised image classification (MIX'EM, MiCE, SimCLR + K-means) in Keras 3",
    long_description=Path(__file__).with_name("README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["mixem_tf*", "trainers*", "export*", "serving*"]),
    install_requires=_requirements("requirements-core.txt"),
    extras_require={"tf": _requirements("requirements.txt"), "jax": ["jax"]},
)
