"""ONNX export: parity in ONNX Runtime and ONNX's reference evaluator, converter warnings."""

import json
import logging

import numpy as np

import pytest

tf = pytest.importorskip("tensorflow")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("tf2onnx")

from export import onnx as onnx_export  # noqa: E402
from mixem_tf.cli import run as run_cli  # noqa: E402


@pytest.mark.slow
def test_onnx_keeps_uint8_input_opset_and_outputs(onnx_model):
    model = onnx.load(str(onnx_model))
    (images,) = model.graph.input
    assert images.name == "images"
    assert images.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert len(images.type.tensor_type.shape.dim) == 4
    assert {o.name for o in model.graph.output} == {"cluster", "probabilities", "distances",
                                                    "embedding"}
    assert any(o.domain in ("", "ai.onnx") and o.version == onnx_export.DEFAULT_OPSET
               for o in model.opset_import)
    props = {p.key: p.value for p in model.metadata_props}
    assert props["opset"] == str(onnx_export.DEFAULT_OPSET) and props["method"] == "mixem"
    assert json.loads(props["parity"])["onnxruntime"]["cluster"] == 0


@pytest.mark.slow
def test_parity_in_two_runtimes_on_real_images(onnx_model, exported_model):
    batches = onnx_export.parity_images(exported_model, limit=32)
    assert [b.shape[1:] for b in batches] == [(8, 8, 1), (16, 16, 3)]
    report = onnx_export.check_parity(onnx.load(str(onnx_model)), exported_model, batches)
    assert report["images"] == 64
    for runtime in ("onnxruntime", "reference"):
        assert report[runtime]["embedding"] <= onnx_export.TOLERANCE
        assert report[runtime]["cluster"] == 0


@pytest.mark.slow
def test_parity_images_from_a_folder(onnx_model, exported_model, tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for i, size in enumerate([(12, 9), (12, 9), (30, 30)]):
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    (tmp_path / "x.txt").write_text("skipped")
    batches = onnx_export.parity_images(exported_model, tmp_path)
    assert sorted(b.shape for b in batches) == [(1, 30, 30, 3), (2, 12, 9, 3)]
    report = onnx_export.check_parity(onnx.load(str(onnx_model)), exported_model, batches)
    assert report["images"] == 3 and report["onnxruntime"]["cluster"] == 0


@pytest.mark.slow
def test_a_converter_warning_is_an_error_and_writes_nothing(exported_model, tmp_path,
                                                            monkeypatch):
    import tf2onnx.convert

    real = tf2onnx.convert.from_graph_def

    def noisy(*args, **kwargs):
        logging.getLogger("tf2onnx.tfonnx").error(
            "Tensorflow op [foo: ImageProjectiveTransformV3] is not supported")
        return real(*args, **kwargs)

    monkeypatch.setattr(tf2onnx.convert, "from_graph_def", noisy)
    out = tmp_path / "m.onnx"
    with pytest.raises(onnx_export.ConversionError, match="is not supported"):
        onnx_export.export_onnx(exported_model, out, verbose=False)
    assert not out.exists() and not list(tmp_path.iterdir())


@pytest.mark.slow
def test_failed_parity_deletes_the_output(exported_model, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(onnx_export, "TOLERANCE", -1.0)
    out = tmp_path / "m.onnx"
    out.write_bytes(b"an older conversion")
    code = run_cli(onnx_export.main, ["--saved-model", str(exported_model), "--out", str(out)])
    assert code == 2 and "embedding differs" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # no new file, and the old one is gone


@pytest.mark.slow
def test_openvino_runs_the_file_as_tensorflow_does(onnx_model, exported_model):
    pytest.importorskip("openvino")
    model = onnx.load(str(onnx_model))
    # The two constructs OpenVINO mishandles: a cond (If) and an Unsqueeze with empty axes.
    assert "If" not in {node.op_type for node in model.graph.node}
    rng = np.random.default_rng(0)
    batches = [*onnx_export.parity_images(exported_model, limit=32),   # the training shape too
               rng.integers(0, 256, (5, 13, 7, 4), dtype=np.uint8),
               rng.integers(0, 256, (3, 8, 8, 2), dtype=np.uint8)]
    report = onnx_export.check_parity(model, exported_model, batches)
    assert report["openvino"]["embedding"] <= onnx_export.TOLERANCE
    assert report["openvino"]["cluster"] == 0


@pytest.mark.slow
def test_invalid_images_fail_in_every_onnx_runtime(onnx_model):
    import onnxruntime

    openvino = pytest.importorskip("openvino")
    session = onnxruntime.InferenceSession(str(onnx_model), providers=["CPUExecutionProvider"])
    compiled = openvino.Core().compile_model(str(onnx_model), "CPU")
    for shape in [(1, 0, 8, 1), (1, 8, 8, 5), (1, 8, 8, 200)]:
        images = np.zeros(shape, np.uint8)
        with pytest.raises(Exception, match="Reshape"):
            session.run(None, {"images": images})
        with pytest.raises(RuntimeError):
            compiled(images)
    assert session.run(None, {"images": np.zeros((1, 1, 1, 1), np.uint8)})[0].shape == (1,)


def test_empty_unsqueezes_become_identities_and_others_stay():
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Unsqueeze", ["x", "none"], ["y"]),
         helper.make_node("Unsqueeze", ["y", "zero"], ["z"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 2])],
        [numpy_helper.from_array(np.zeros(0, np.int64), "none"),
         numpy_helper.from_array(np.zeros(1, np.int64), "zero")])
    model = onnx_export.drop_empty_unsqueezes(helper.make_model(graph))
    assert [(n.op_type, list(n.input)) for n in model.graph.node] == [
        ("Identity", ["x"]), ("Unsqueeze", ["y", "zero"])]


def test_missing_saved_model_is_a_one_line_error(tmp_path, capsys):
    code = run_cli(onnx_export.main, ["--saved-model", str(tmp_path), "--out",
                                      str(tmp_path / "m.onnx")])
    assert code == 2 and "holds no saved_model.pb" in capsys.readouterr().err


def test_converting_prints_no_deprecation_notices_of_tensorflow(tmp_path, capsys):
    class Doubler(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
        def double(self, x):
            return {"y": 2.0 * x}

    module = Doubler()
    tf.saved_model.save(module, str(tmp_path / "m"),
                        signatures={onnx_export.SIGNATURE: module.double})
    capsys.readouterr()
    model = onnx_export.convert_saved_model(tmp_path / "m")
    assert [o.name for o in model.graph.output] == ["y"]
    assert "deprecated" not in capsys.readouterr().err
    kept = []
    handler = logging.Handler()
    handler.emit = kept.append
    logger = logging.getLogger("tensorflow")
    logger.addHandler(handler)
    try:
        with onnx_export._tensorflow_deprecations_silenced():
            logger.warning("f (from tensorflow.x) is deprecated and will be removed in a future "
                           "version.")
            logger.warning("a real problem")
    finally:
        logger.removeHandler(handler)
    assert [record.getMessage() for record in kept] == ["a real problem"]
