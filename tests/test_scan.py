"""SCAN's stages end to end on digits: simclr → scan → selflabel, their checks of the source
run (one-line errors, nothing written), the neighbours a resume reuses, and export."""

import json

import numpy as np
import pytest

from mixem_tf.cli import run
from mixem_tf.settings import TrainConfig

pytestmark = [pytest.mark.core, pytest.mark.slow]

SHARED = dict(dataset="digits", readout_settings="sklearn", backbone_width=16)


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """{stage: (run dir, RunResult)} of a short simclr → scan → selflabel chain on digits."""
    from mixem_tf.training import train_run

    root = tmp_path_factory.mktemp("chain")
    results = {"simclr": train_run(TrainConfig(method="simclr", epochs=15, **SHARED),
                                   root / "simclr", verbose=0)}
    results["scan"] = train_run(TrainConfig(method="scan", epochs=6, lr=1e-3,
                                            init_from=str(root / "simclr"),
                                            dataset="digits", readout_settings="sklearn"),
                                root / "scan", verbose=0)
    results["selflabel"] = train_run(TrainConfig(method="selflabel", epochs=3, lr=1e-4,
                                                 init_from=str(root / "scan"),
                                                 dataset="digits", readout_settings="sklearn"),
                                     root / "selflabel", verbose=0)
    return {stage: (root / stage, result) for stage, result in results.items()}


def _default(result):
    return next(r.row for r in result.readouts if r.row["default"])


def test_scan_then_selflabel_learn_digit_clusters_from_a_simclr_run(chain):
    from mixem_tf import cluster
    from mixem_tf.data import load_dataset
    from mixem_tf.metrics import cluster_accuracy

    digits = load_dataset("digits")
    pixels = cluster.kmeans(digits.images.astype(np.float32) / 255, 10, seed=0)
    pixel_acc = cluster_accuracy(digits.labels, pixels.labels)
    scan = _default(chain["scan"][1])
    assert (scan["feature"], scan["clustering"]) == ("p", "argmax")
    assert scan["acc"] > pixel_acc, (scan["acc"], pixel_acc)
    assert np.count_nonzero(scan["cluster_sizes"]) == 10      # the entropy keeps every cluster
    selflabel = _default(chain["selflabel"][1])
    assert selflabel["acc"] > scan["acc"] - 0.05, (selflabel, scan)
    history = chain["selflabel"][1].history
    assert history["confident"][-1] > 0.1                     # it trained on confident images
    consistency = chain["scan"][1].history["consistency"]
    assert consistency[-1] < consistency[0]


def test_a_stage_inherits_its_sources_settings_and_records_its_checkpoint(chain):
    run_dir, result = chain["scan"]
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["settings"]["backbone_width"] == 16 and saved["num_clusters"] == 10
    source = saved["init_from"]
    record = json.loads((chain["simclr"][0] / "checkpoints" / "checkpoint.json").read_text())
    assert source["path"] == str(chain["simclr"][0].resolve())
    assert source["epoch"] == 15 and len(source["sha256"]) == 64
    assert source["sha256"] in json.dumps(record)
    assert (run_dir / "neighbours.npz").is_file()


def test_the_feed_pairs_each_anchor_with_itself_or_one_of_its_neighbours(chain):
    from mixem_tf.data import load_dataset
    from mixem_tf.neighbours import load_neighbours
    from mixem_tf.runs import load_run

    images = load_dataset("digits").images
    model = load_run(chain["scan"][0])[0]
    model.neighbours = load_neighbours(chain["scan"][0], len(images), 20)
    indices = np.arange(0, 1797, 7)
    batch = model.training_batch(images, indices, np.random.default_rng(0))
    assert batch.shape == (len(indices), 2, 8, 8, 1) and batch.dtype == np.uint8
    np.testing.assert_array_equal(batch[:, 0], images[indices])
    for row, index in enumerate(indices):
        allowed = images[[index, *model.neighbours[index]]]
        assert any(np.array_equal(batch[row, 1], candidate) for candidate in allowed)
    again = model.training_batch(images, indices, np.random.default_rng(0))
    np.testing.assert_array_equal(batch, again)


def test_a_resumed_scan_run_reads_its_neighbours_instead_of_mining(chain, tmp_path):
    import shutil

    from mixem_tf.training import train_run

    source = tmp_path / "source"
    shutil.copytree(chain["simclr"][0], source)
    config = TrainConfig(method="scan", epochs=1, lr=1e-3, init_from=str(source), **{
        k: v for k, v in SHARED.items() if k != "backbone_width"})
    train_run(config, tmp_path / "scan", verbose=0)
    stored = np.load(tmp_path / "scan" / "neighbours.npz")["indices"]
    shutil.rmtree(source)                                  # nothing left to mine from
    result = train_run(config, tmp_path / "scan", resume=True, epochs=2, verbose=0)
    assert len(result.history["loss"]) == 1
    np.testing.assert_array_equal(np.load(tmp_path / "scan" / "neighbours.npz")["indices"],
                                  stored)


def _fit(argv):
    from trainers.fit import main

    return run(main, argv)


@pytest.mark.parametrize("extra, message", [
    ([], "--method scan refines a trained run: pass --init-from RUN"),
    (["--init-from", "{missing}"], "holds no run"),
    (["--init-from", "{simclr}", "--clusters", "5"], "scan keeps the K of its source run (10"),
    (["--init-from", "{simclr}", "--image-size", "16"], "its image_size is 8, this run's 16"),
    (["--init-from", "{simclr}", "--neighbour-readout", "q/raw/argmax"],
     "--readout q/raw/argmax: the run has no such read-out"),
])
def test_a_source_the_stage_cannot_use_is_refused_in_one_line_before_anything_is_written(
        chain, tmp_path, capsys, extra, message):
    paths = {"missing": str(tmp_path / "nothing"), "simclr": str(chain["simclr"][0])}
    out = tmp_path / "run"
    argv = ["--method", "scan", "--dataset", "digits", "--out", str(out)]
    assert _fit(argv + [a.format(**paths) for a in extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not out.exists()


def test_a_source_of_another_dataset_or_without_readouts_is_refused(chain, tmp_path, capsys):
    import shutil

    out = tmp_path / "run"
    assert _fit(["--method", "selflabel", "--dataset", "mnist", "--init-from",
                 str(chain["scan"][0]), "--out", str(out)]) == 2
    assert "its dataset is 'digits', this run's 'mnist'" in capsys.readouterr().err
    unevaluated = tmp_path / "unevaluated"
    shutil.copytree(chain["scan"][0], unevaluated)
    (unevaluated / "metrics.json").unlink()
    assert _fit(["--method", "selflabel", "--dataset", "digits", "--init-from",
                 str(unevaluated), "--out", str(out)]) == 2
    assert "has no metrics.json" in capsys.readouterr().err
    assert not out.exists()


def test_selflabel_starts_from_the_scan_runs_head(chain):
    from mixem_tf.data import load_dataset
    from mixem_tf.runs import load_run
    from mixem_tf.settings import TrainConfig as Config
    from mixem_tf.methods import build_method

    images = load_dataset("digits").images[:64]
    scan = load_run(chain["scan"][0])[0]
    config = Config(method="selflabel", init_from=str(chain["scan"][0]),
                    dataset="digits").resolved()
    model = build_method(config, (8, 8, 1), 10)
    model(images[:2])
    from mixem_tf.training import load_backbone

    load_backbone(model, chain["scan"][0])
    model.prepare_training(images, None, source=str(chain["scan"][0]))
    np.testing.assert_allclose(model.predict(images, verbose=0)["p"],
                               scan.predict(images, verbose=0)["p"], atol=1e-5)


def test_the_stages_head_exports_its_argmax_to_savedmodel_and_onnx(chain, tmp_path):
    pytest.importorskip("tensorflow")
    import keras

    from export.keras_model import main as keras_main
    from export.onnx import export_onnx
    from export.runtime import load_predictor
    from export.savedmodel import export_run
    from mixem_tf.data import load_dataset
    from mixem_tf.readouts import load_readout
    from mixem_tf.runs import load_run

    run_dir = chain["selflabel"][0]
    assert load_readout(run_dir).name == "p/raw/argmax"
    images = load_dataset("digits").images[:64]
    expected = load_run(run_dir)[0].predict(images, verbose=0)
    version = export_run(run_dir, tmp_path / "models", "selflabel", verbose=False)
    outputs = load_predictor(saved_model=version)(images)
    np.testing.assert_allclose(outputs["probabilities"], expected["p"], atol=1e-5)
    np.testing.assert_array_equal(outputs["cluster"], np.argmax(expected["p"], axis=-1))
    np.testing.assert_allclose(outputs["embedding"], expected["h"], atol=1e-4)
    export_onnx(version, tmp_path / "selflabel.onnx", verbose=False)     # checks parity
    onnx_outputs = load_predictor(onnx=tmp_path / "selflabel.onnx")(images)
    np.testing.assert_array_equal(onnx_outputs["cluster"], outputs["cluster"])
    assert run(keras_main, ["--run", str(run_dir), "--out", str(tmp_path / "s.keras")]) == 0
    loaded = keras.saving.load_model(tmp_path / "s.keras")
    np.testing.assert_allclose(loaded.predict(images, verbose=0)["p"], expected["p"],
                               atol=1e-5)
