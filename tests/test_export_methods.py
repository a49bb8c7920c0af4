"""Every method's runs export: a `.keras` file (either backend) and, for a method's own argmax
read-out (cdec's q, MiCE's posterior r), a SavedModel and ONNX model that serve that
assignment."""

import keras
import numpy as np
import pytest

from mixem_tf.cli import run


def _one_epoch_run(tmp_path_factory, method, **options):
    """A 1-epoch run of `method` on digits with a small ConvNet."""
    from mixem_tf.settings import TrainConfig
    from mixem_tf.training import train_run

    out = tmp_path_factory.mktemp(method) / "run"
    train_run(TrainConfig(dataset="digits", method=method, epochs=1, backbone_width=8,
                          readout_settings="sklearn", options=options), out, verbose=0)
    return out


@pytest.fixture(scope="module")
def cdec_run(tmp_path_factory):
    """A cdec run on digits, default read-out argmax q."""
    return _one_epoch_run(tmp_path_factory, "cdec", hidden_dim=32)


@pytest.fixture(scope="module")
def mice_run(tmp_path_factory):
    """A MiCE run on digits (a small queue), default read-out argmax r."""
    return _one_epoch_run(tmp_path_factory, "mice", queue_size=512)


@pytest.mark.core
def test_a_run_saves_as_a_keras_file_with_its_checkpoint_weights(cdec_run, tmp_path, capsys):
    from export.keras_model import main
    from mixem_tf.data import load_dataset
    from mixem_tf.runs import load_run

    out = tmp_path / "models" / "cdec.keras"
    assert run(main, ["--run", str(cdec_run), "--out", str(out)]) == 0
    loaded = keras.saving.load_model(out)
    images = load_dataset("digits").images[:32]
    expected = load_run(cdec_run)[0].predict(images, verbose=0)
    got = loaded.predict(images, verbose=0)
    for name in ("h", "z", "q"):
        np.testing.assert_allclose(got[name], expected[name], atol=1e-5, err_msg=name)
    assert run(main, ["--run", str(cdec_run), "--out", str(tmp_path / "m.h5")]) == 2
    assert "must end in .keras" in capsys.readouterr().err
    assert run(main, ["--run", str(tmp_path), "--out", str(tmp_path / "x.keras")]) == 2
    assert not (tmp_path / "x.keras").exists()


@pytest.mark.parametrize("name, key, feature, embedding", [
    ("cdec", "q/raw/argmax", "q", 128),   # cdec's z
    ("mice", "r/raw/argmax", "r", 32),    # MiCE's h (ConvNet width 8); the queue is a constant
])
def test_an_argmax_readout_exports_its_assignment_to_savedmodel_and_onnx(
        request, tmp_path, name, key, feature, embedding):
    pytest.importorskip("tensorflow")
    from export.onnx import export_onnx
    from export.runtime import load_predictor
    from export.savedmodel import export_run
    from mixem_tf.data import load_dataset
    from mixem_tf.readouts import load_readout
    from mixem_tf.runs import load_run

    run_dir = request.getfixturevalue(f"{name}_run")
    readout = load_readout(run_dir)
    assert readout.key == key and readout.head == "argmax"
    version = export_run(run_dir, tmp_path / "models", name, verbose=False)
    images = load_dataset("digits").images[:64]
    expected = load_run(run_dir)[0].predict(images, verbose=0)[feature]
    outputs = load_predictor(saved_model=version)(images)
    np.testing.assert_allclose(outputs["probabilities"], expected, atol=1e-5)
    np.testing.assert_array_equal(outputs["cluster"], np.argmax(expected, axis=-1))
    assert outputs["embedding"].shape == (64, embedding)
    report = export_onnx(version, tmp_path / f"{name}.onnx", verbose=False)  # checks parity
    assert report["onnxruntime"]["embedding"] < 1e-4
    onnx_outputs = load_predictor(onnx=tmp_path / f"{name}.onnx")(images)
    np.testing.assert_array_equal(onnx_outputs["cluster"], outputs["cluster"])
    np.testing.assert_allclose(onnx_outputs["probabilities"], expected, atol=1e-4)
