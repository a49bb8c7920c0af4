"""SavedModel export: layout, versions, signatures, parity with the Keras model, the gate."""

import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from export import savedmodel  # noqa: E402
from export.savedmodel import MetricGate, export_run  # noqa: E402
from mixem_tf.readouts import load_readout  # noqa: E402
from mixem_tf.runs import load_evaluation, load_run  # noqa: E402
from mixem_tf.cli import run as run_cli  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUTPUTS = {"cluster", "probabilities", "distances", "embedding"}
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}


def _images(run_dir, count=64):
    model, config, _ = load_run(run_dir)
    return load_evaluation(config).images[:count]


def _keras_reference(run_dir, images):
    """What the exported graph must compute, from the Keras model and the read-out."""
    model, _, _ = load_run(run_dir)
    readout = load_readout(run_dir)
    h = np.asarray(model(images)[readout.feature], np.float64)
    if readout.normalize:
        h = h / np.maximum(np.linalg.norm(h, axis=1, keepdims=True), 1e-12)
    distances = ((h[:, None, :] - readout.centroids[None].astype(np.float64)) ** 2).sum(-1)
    return h, distances


def _serve(version_dir, signature="serving_default"):
    return tf.saved_model.load(str(version_dir)).signatures[signature]


@pytest.mark.slow
def test_layout_assets_and_versions(exported_model, digits_run, tmp_path):
    assert exported_model.name == "1"
    for name in ("saved_model.pb", "variables", "assets/model_card.json", "assets/clusters.json",
                 "assets.extra/tf_serving_warmup_requests"):
        assert (exported_model / name).exists(), name
    card = json.loads((exported_model / "assets" / "model_card.json").read_text())
    assert card["method"] == "mixem" and card["dataset"] == "digits"
    assert card["training"]["epochs"] == 1 and "tensorflow" in card["versions"]["export"]
    assert card["readout"]["key"] == "z/l2/kmeans"  # MIX'EM's default read-out
    assert card["readout"]["temperature"] > 0 and "nmi" in card["metrics"] and card["created"]
    default = next(r for r in json.loads((digits_run / "metrics.json").read_text())["readouts"]
                   if r["default"])  # the run's label-free T is the one served
    assert card["readout"]["temperature"] == pytest.approx(default["temperature"], rel=1e-6)
    assert card["readout"]["temperature_from"].startswith("label-free")
    clusters = json.loads((exported_model / "assets" / "clusters.json").read_text())
    assert clusters["labels_available"] and len(clusters["clusters"]) == card["num_clusters"]
    sizes = [c["size"] for c in clusters["clusters"].values()]
    assert sum(sizes) == 1797
    assert all(0 < c["purity"] <= 1 for c in clusters["clusters"].values() if c["size"])

    base = tmp_path / "models"
    assert run_cli(savedmodel.main, ["--run", str(digits_run), "--base-dir", str(base)]) == 0
    first = base / "mixem" / "1"  # --model-name defaults to the method
    before = (first / "saved_model.pb").read_bytes()
    second = export_run(digits_run, base, "mixem", readout="h/l2/kmeans", verbose=False)
    assert (first.name, second.name) == ("1", "2")
    assert (first / "saved_model.pb").read_bytes() == before  # never overwritten
    assert sorted(p.name for p in (base / "mixem").iterdir()) == ["1", "2"]  # no temp left
    card = json.loads((second / "assets" / "model_card.json").read_text())
    assert card["readout"]["key"] == "h/l2/kmeans"


@pytest.mark.slow
def test_saved_model_cli_lists_both_signatures(exported_model):
    cli = shutil.which("saved_model_cli")
    if cli is None:
        pytest.skip("saved_model_cli is not on PATH")
    shown = subprocess.run([cli, "show", "--dir", str(exported_model), "--all"], env=ENV,
                           capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0, shown.stderr[-2000:]
    text = shown.stdout
    for expected in ("signature_def['serving_default']", "signature_def['serving_bytes']",
                     "inputs['images']", "DT_UINT8", "inputs['image_bytes']", "DT_STRING",
                     "outputs['cluster']", "DT_INT64", "outputs['probabilities']",
                     "outputs['distances']", "outputs['embedding']"):
        assert expected in text, expected


@pytest.mark.slow
def test_reload_in_a_fresh_process_equals_the_keras_model(exported_model, digits_run, tmp_path):
    images = _images(digits_run)
    np.save(tmp_path / "images.npy", images)
    script = textwrap.dedent(f"""
        import numpy as np, tensorflow as tf
        serve = tf.saved_model.load({str(exported_model)!r}).signatures["serving_default"]
        out = serve(images=tf.constant(np.load({str(tmp_path / 'images.npy')!r})))
        np.savez({str(tmp_path / 'out.npz')!r}, **{{k: v.numpy() for k, v in out.items()}})
    """)
    done = subprocess.run([sys.executable, "-c", script], env=ENV, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    out = np.load(tmp_path / "out.npz")
    assert set(out.files) == OUTPUTS
    embedding, distances = _keras_reference(digits_run, images)
    assert out["cluster"].dtype == np.int64 and out["embedding"].dtype == np.float32
    np.testing.assert_allclose(out["embedding"], embedding, atol=1e-5)
    np.testing.assert_allclose(out["distances"], distances, atol=1e-4)
    np.testing.assert_array_equal(out["cluster"], distances.argmin(1))
    np.testing.assert_allclose(out["probabilities"].sum(1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(out["probabilities"].argmax(1), out["cluster"])


@pytest.mark.slow
def test_bytes_signature_equals_the_uint8_signature(exported_model, digits_run):
    from PIL import Image

    images = _images(digits_run, 12)

    def encode(array, fmt):
        buffer = io.BytesIO()
        Image.fromarray(array[..., 0]).save(buffer, format=fmt)
        return buffer.getvalue()

    encoded = [encode(image, "PNG" if i % 2 else "BMP") for i, image in enumerate(images)]
    from_bytes = _serve(exported_model, "serving_bytes")(image_bytes=tf.constant(encoded))
    from_pixels = _serve(exported_model)(images=tf.constant(images))
    for name in OUTPUTS:
        np.testing.assert_allclose(from_bytes[name].numpy(), from_pixels[name].numpy(),
                                   atol=1e-6, err_msg=name)
    gif = io.BytesIO()
    Image.fromarray(np.repeat(images[0], 3, -1)).save(gif, format="GIF")
    jpeg = io.BytesIO()
    Image.fromarray(np.repeat(images[0], 3, -1)).save(jpeg, format="JPEG", quality=95)
    out = _serve(exported_model, "serving_bytes")(
        image_bytes=tf.constant([gif.getvalue(), jpeg.getvalue()]))
    assert out["cluster"].shape == (2,) and out["embedding"].shape[0] == 2
    with pytest.raises(tf.errors.InvalidArgumentError):
        _serve(exported_model, "serving_bytes")(image_bytes=tf.constant([b"not an image"]))


@pytest.mark.slow
def test_any_size_and_channel_count(exported_model):
    serve = _serve(exported_model)
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (3, 20, 20, 3), dtype=np.uint8)
    out = serve(images=tf.constant(rgb))
    k = out["probabilities"].shape[1]
    assert out["cluster"].shape == (3,) and out["distances"].shape == (3, k)
    np.testing.assert_allclose(out["probabilities"].numpy().sum(1), 1.0, atol=1e-5)
    rgba = np.concatenate([rgb, np.full((3, 20, 20, 1), 7, np.uint8)], axis=-1)
    np.testing.assert_allclose(serve(images=tf.constant(rgba))["embedding"].numpy(),
                               out["embedding"].numpy(), atol=1e-6)  # alpha dropped
    assert serve(images=tf.constant(rgb[:, :5, :13]))["cluster"].shape == (3,)


@pytest.mark.slow
def test_the_warmup_file_holds_a_predict_request_per_signature_that_runs(exported_model):
    from tensorflow_serving.apis import prediction_log_pb2

    records = [prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in
               tf.data.TFRecordDataset(str(exported_model / "assets.extra"
                                           / "tf_serving_warmup_requests"))]
    requests = [r.predict_log.request for r in records]
    assert [r.model_spec.signature_name for r in requests] == ["serving_default",
                                                              "serving_bytes"]
    for request in requests:
        (name, tensor), = request.inputs.items()
        outputs = _serve(exported_model, request.model_spec.signature_name)(
            **{name: tf.constant(tf.make_ndarray(tensor))})
        assert outputs["cluster"].shape == (4,)


@pytest.mark.slow
def test_images_the_readme_calls_invalid_are_refused_inside_the_graph(exported_model):
    from serving_fixtures import png_header

    serve = _serve(exported_model)
    for shape in [(1, 0, 8, 1), (1, 8, 8, 5), (1, 8, 8, 200)]:
        with pytest.raises(tf.errors.InvalidArgumentError, match="C = 1 \\(grey\\)"):
            serve(images=tf.zeros(shape, tf.uint8))
    with pytest.raises(tf.errors.InvalidArgumentError, match="20000 x 20000 pixels"):
        _serve(exported_model, "serving_bytes")(image_bytes=tf.constant([png_header(20000,
                                                                                    20000)]))
    card = json.loads((exported_model / "assets" / "model_card.json").read_text())
    assert "at most 16777216 pixels" in card["signatures"]["serving_bytes"]


def test_clusters_table_without_labels_gives_sizes_only():
    table = savedmodel._clusters_table(np.array([0, 2, 2]), None, 4, None)
    assert not table["labels_available"] and "no labels" in table["note"]
    assert [c["size"] for c in table["clusters"].values()] == [1, 0, 2, 0]
    labelled = savedmodel._clusters_table(np.array([0, 0, 1]), np.array([3, 3, 1]), 3, None)
    assert labelled["clusters"]["0"] == {"majority_label": 3, "purity": 1.0, "size": 2}
    assert labelled["clusters"]["2"]["size"] == 0


def test_metric_gate_parses_and_checks():
    gate = MetricGate("nmi>=0.6")
    gate.check({"nmi": 0.6}, "run")
    with pytest.raises(ValueError, match="nmi = 0.5000, which fails --require-metric nmi>=0.6"):
        gate.check({"nmi": 0.5}, "run")
    with pytest.raises(ValueError, match="no labels"):
        gate.check({}, "run")
    for bad in ("nmi=>0.6", "loss<1", "nmi>=", "nmi>=0.6x"):
        with pytest.raises(ValueError, match="expected METRIC OP VALUE"):
            MetricGate(bad)


@pytest.mark.slow
def test_cli_refuses_bad_runs_and_gates_and_writes_nothing(digits_run, tmp_path, capsys):
    base = tmp_path / "models"

    def export(*args):
        return run_cli(savedmodel.main, ["--base-dir", str(base), "--model-name", "m", *args])

    assert export("--run", str(digits_run), "--require-metric", "nmi>=0.999") == 2
    assert "refusing to export" in capsys.readouterr().err
    assert export("--run", str(digits_run), "--require-metric", "nmi>>1") == 2
    assert "expected METRIC OP VALUE" in capsys.readouterr().err
    assert export("--run", str(digits_run), "--readout", "h/l2/nope") == 2
    assert "unknown read-out kind 'nope'; choose from kmeans," in capsys.readouterr().err
    assert export("--run", str(digits_run), "--readout", "h/raw/kmeans@7") == 2
    assert "the run has no such read-out; choose from" in capsys.readouterr().err
    assert export("--run", str(digits_run), "--max-image-pixels", "0") == 2
    assert "--max-image-pixels must be >= 1" in capsys.readouterr().err

    broken = tmp_path / "broken"
    shutil.copytree(digits_run, broken, ignore=shutil.ignore_patterns("logs"))
    (broken / "readout.npz").unlink()
    assert export("--run", str(broken)) == 2
    assert "no readout.npz" in capsys.readouterr().err
    shutil.rmtree(broken / "checkpoints")
    assert export("--run", str(broken)) == 2
    assert "has no checkpoint" in capsys.readouterr().err
    assert export("--run", str(tmp_path / "nothing")) == 2
    assert "holds no run" in capsys.readouterr().err
    assert not base.exists() or not any((base / "m").iterdir())


JAX_SCRIPT = """
import sys, numpy as np
from mixem_tf.settings import TrainConfig
from mixem_tf.training import train_run
from mixem_tf.runs import load_run, load_evaluation
out = sys.argv[1]
train_run(TrainConfig(dataset="digits", method="simclr", epochs=1, batch_size=256), out,
          verbose=0)
model, config, saved = load_run(out)
images = load_evaluation(config).images[:32]
np.savez(out + "/jax_features.npz", images=images, h=np.asarray(model(images)["h"]))
"""


@pytest.mark.slow
def test_a_jax_trained_run_exports_and_matches(tmp_path):
    pytest.importorskip("jax")
    run_dir = tmp_path / "jax-run"
    done = subprocess.run([sys.executable, "-c", JAX_SCRIPT, str(run_dir)], cwd=ROOT,
                          env={**ENV, "KERAS_BACKEND": "jax"}, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((run_dir / "config.json").read_text())["backend"] == "jax"
    version = export_run(run_dir, tmp_path / "models", "simclr", verbose=False)
    saved = np.load(run_dir / "jax_features.npz")
    out = _serve(version)(images=tf.constant(saved["images"]))
    h = saved["h"] / np.linalg.norm(saved["h"], axis=1, keepdims=True)
    np.testing.assert_allclose(out["embedding"].numpy(), h, atol=1e-4)
    readout = load_readout(run_dir)
    distances = ((h[:, None] - readout.centroids[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(out["cluster"].numpy(), distances.argmin(1))


@pytest.mark.slow
def test_init_from_loads_the_backbone_through_load_run(digits_run, tmp_path):
    from mixem_tf.methods import build_method
    from mixem_tf.training import load_backbone

    trained, config, saved = load_run(digits_run)
    fresh = build_method(config, tuple(saved["input_shape"]), saved["num_clusters"])
    fresh(np.zeros((2, *saved["input_shape"]), np.uint8))
    load_backbone(fresh, digits_run)
    for got, want in zip(fresh.backbone.weights, trained.backbone.weights):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    with pytest.raises(ValueError, match="--init-from: .* holds no run"):
        load_backbone(fresh, tmp_path)
