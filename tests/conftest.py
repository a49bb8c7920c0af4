"""Test-wide settings: quiet TensorFlow, OpenMP threads that sleep rather than spin (so
scikit-learn's K-means does not fight TensorFlow's threads for the two CPU cores), and a
decoded-image cache in a temporary folder (never the user's), a fresh one per test."""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
_SESSION_CACHE = tempfile.mkdtemp(prefix="mixem-tf-test-cache-")
os.environ["MIXEM_TF_CACHE"] = _SESSION_CACHE  # session fixtures and subprocesses
atexit.register(shutil.rmtree, _SESSION_CACHE, ignore_errors=True)


# -- export / predict: one tiny trained run, exported once, shared by their test modules ----
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def decoded_cache(tmp_path_factory, monkeypatch):
    """Each test's own decoded-image cache folder (`mixem_tf.data.cache`)."""
    folder = tmp_path_factory.mktemp("decoded-cache")
    monkeypatch.setenv("MIXEM_TF_CACHE", str(folder))
    return folder


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory):
    """A MIX'EM run on digits (1 epoch): config.json, checkpoint, metrics.json, readout.npz."""
    from mixem_tf.settings import TrainConfig
    from mixem_tf.training import train_run

    out = tmp_path_factory.mktemp("export_run") / "run"
    train_run(TrainConfig(dataset="digits", epochs=1, batch_size=256, readout_settings="sklearn"),
              out, verbose=0)
    return out


@pytest.fixture(scope="session")
def exported_model(digits_run, tmp_path_factory):
    """`digits_run` exported to BASE/mixem/1; returns the version folder."""
    from export.savedmodel import export_run

    return export_run(digits_run, tmp_path_factory.mktemp("models"), "mixem", verbose=False)


@pytest.fixture(scope="session")
def onnx_model(exported_model, tmp_path_factory):
    """`exported_model` converted to ONNX (parity already checked by the conversion)."""
    from export.onnx import export_onnx

    out = tmp_path_factory.mktemp("onnx") / "mixem.onnx"
    export_onnx(exported_model, out, verbose=False)
    return out
