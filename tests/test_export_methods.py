"""Every method's runs export: a `.keras` file (either backend) and, for a method's own argmax
read-out (cdec's q), a SavedModel and ONNX model that serve that assignment."""

import keras
import numpy as np
import pytest

from mixem_tf.cli import run


@pytest.fixture(scope="module")
def cdec_run(tmp_path_factory):
    """A cdec run on digits (1 epoch), default read-out argmax q."""
    from mixem_tf.recipes import TrainConfig
    from mixem_tf.training import train_run

    out = tmp_path_factory.mktemp("cdec") / "run"
    train_run(TrainConfig(dataset="digits", method="cdec", epochs=1, backbone_width=8,
                          options={"hidden_dim": 32}), out, verbose=0)
    return out


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


def test_an_argmax_readout_exports_its_assignment_to_savedmodel_and_onnx(cdec_run, tmp_path):
    pytest.importorskip("tensorflow")
    from export.onnx import export_onnx
    from export.runtime import load_predictor
    from export.savedmodel import export_run
    from mixem_tf.data import load_dataset
    from mixem_tf.runs import load_readout, load_run

    readout = load_readout(cdec_run)
    assert readout.key == "q/raw/argmax" and readout.centroids is None
    version = export_run(cdec_run, tmp_path / "models", "cdec", verbose=False)
    images = load_dataset("digits").images[:64]
    q = load_run(cdec_run)[0].predict(images, verbose=0)["q"]
    outputs = load_predictor(saved_model=version)(images)
    np.testing.assert_allclose(outputs["probabilities"], q, atol=1e-5)
    np.testing.assert_array_equal(outputs["cluster"], np.argmax(q, axis=-1))
    assert outputs["embedding"].shape == (64, 128)  # cdec's z
    report = export_onnx(version, tmp_path / "cdec.onnx", verbose=False)  # checks parity
    assert report["onnxruntime"]["embedding"] < 1e-4
    onnx_outputs = load_predictor(onnx=tmp_path / "cdec.onnx")(images)
    np.testing.assert_array_equal(onnx_outputs["cluster"], outputs["cluster"])
    np.testing.assert_allclose(onnx_outputs["probabilities"], q, atol=1e-4)
