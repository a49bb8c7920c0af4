"""`trainers.recluster` and `trainers.fit --clusters auto` on small digits runs: new read-outs
at other Ks without retraining, checkpoints untouched, refusals that change nothing, and an
export of a reclustered read-out."""

import hashlib
import json
import shutil

import numpy as np
import pytest

from cli_helpers import call_entry_point
from trainers import recluster


def _snapshot(run_dir):
    """{relative path: SHA-256} of every file in a run."""
    return {str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run_dir.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def simclr_run(tmp_path_factory):
    """SimCLR on digits, 1 epoch, every read-out (h, z; raw, L2) at K = 10."""
    from mixem_tf.settings import TrainConfig
    from mixem_tf.training import train_run

    out = tmp_path_factory.mktemp("recluster") / "run"
    train_run(TrainConfig(dataset="digits", method="simclr", epochs=1, batch_size=256,
                          backbone_width=8, readout_settings="sklearn"), out, verbose=0)
    return out


@pytest.mark.core
def test_recluster_adds_readouts_at_a_new_k_and_never_touches_checkpoints(
        simclr_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(simclr_run, run)
    checkpoints = {k: v for k, v in _snapshot(run).items() if k.startswith("checkpoints")}
    code, out, err = call_entry_point(recluster.main, capsys, "--run", run, "--clusters", 7)
    assert code == 0, err
    assert "h/raw/kmeans@7" in out and "h/l2/kmeans@7" in out and "z/l2/kmeans@7" in out
    metrics = json.loads((run / "metrics.json").read_text())
    names = [row["name"] for row in metrics["readouts"]]
    assert len(names) == 8 and "h/l2/kmeans" in names
    assert {row["num_clusters"] for row in metrics["readouts"]} == {10, 7}
    assert [row["name"] for row in metrics["readouts"] if row["default"]] == ["h/l2/kmeans"]
    assert all(len([s for s in row["cluster_sizes"]]) == row["num_clusters"]
               for row in metrics["readouts"])
    after = _snapshot(run)
    assert {k: v for k, v in after.items() if k.startswith("checkpoints")} == checkpoints
    code, out, _ = call_entry_point(recluster.main, capsys, "--run", run, "--clusters", 4,
                                    "--readout", "z/l2/kmeans", "--default")
    assert code == 0 and "z/l2/kmeans@4 is now the run's default" in out
    from mixem_tf.readouts import load_readout

    assert load_readout(run).name == "z/l2/kmeans@4"


@pytest.mark.core
def test_kept_augmented_features_belong_to_their_views_seed(simclr_run, tmp_path):
    from mixem_tf.features import evaluation_features

    run = tmp_path / "run"
    shutil.copytree(simclr_run, run)
    first = evaluation_features(run, "augmented", seed=0, verbose=False)["h"]
    other = evaluation_features(run, "augmented", seed=1, verbose=False)["h"]
    again = evaluation_features(run, "augmented", seed=1, verbose=False)["h"]
    assert not np.allclose(first, other)  # not the kept seed-0 views
    np.testing.assert_array_equal(other, again)  # kept, then read back


@pytest.mark.core
@pytest.mark.parametrize("args, message", [
    (["--clusters", "1"], "expected K >= 2"),
    (["--clusters", "1797"], "needs more than the run's 1797 evaluation images"),
    (["--clusters", "5", "--readout", "h/l2/nope"], "unknown read-out kind 'nope'"),
    (["--clusters", "5", "--readout", "h/l2"], "expected FEATURE/l2|raw/KIND"),
    (["--clusters", "5", "--criterion", "silhouette"], "--criterion chooses K"),
    (["--clusters", "5", "--readout", "q/raw/argmax"], "the method's own assignment"),
    (["--clusters", "5", "--readout", "h/l2/kmeans@4"], "without @K"),
])
def test_a_refused_recluster_leaves_the_run_byte_identical(simclr_run, tmp_path, capsys,
                                                          args, message):
    run = tmp_path / "run"
    shutil.copytree(simclr_run, run)
    before = _snapshot(run)
    code, _, err = call_entry_point(recluster.main, capsys, "--run", run, *args)
    assert code == 2 and message in err, err
    assert err.startswith("error:")
    assert _snapshot(run) == before


@pytest.mark.core
def test_auto_chooses_k_without_labels_and_keeps_the_table(simclr_run, tmp_path, capsys):
    """Under whichever backend runs the tests (CI also runs this under JAX)."""
    run = tmp_path / "run"
    shutil.copytree(simclr_run, run)
    code, out, err = call_entry_point(recluster.main, capsys, "--run", run, "--clusters",
                                      "3..8", "--default")
    assert code == 0, err
    choice = json.loads((run / "metrics.json").read_text())["k_choice"]
    assert [row["K"] for row in choice["table"]] == list(range(3, 9))
    assert set(choice["chosen"]) == {"silhouette", "prediction_strength", "eigengap",
                                     "stability"}
    assert choice["k"] == choice["chosen"]["eigengap"] and 3 <= choice["k"] <= 8
    assert f"chosen: K = {choice['k']} by eigengap" in out
    assert any(p.name.endswith(".augmented.npz") for p in (run / "features").iterdir())
    from mixem_tf.readouts import load_readout

    default = load_readout(run)
    assert default.num_clusters == choice["k"] and default.feature == "h"


@pytest.mark.core
def test_fit_clusters_auto_trains_the_heads_at_the_upper_bound_then_chooses(tmp_path, capsys):
    from trainers import fit

    code, out, err = call_entry_point(
        fit.main, capsys, "--dataset", "digits", "--method", "cdec", "--epochs", "1",
        "--batch-size", "256", "--backbone-width", "8", "--clusters", "4..9", "--readouts",
        "default", "--quiet", "--out", tmp_path / "run")
    assert code == 0, err
    saved = json.loads((tmp_path / "run/config.json").read_text())
    assert saved["num_clusters"] == 9 and saved["settings"]["choose_clusters"] == [4, 9]
    metrics = json.loads((tmp_path / "run/metrics.json").read_text())
    default = [row for row in metrics["readouts"] if row["default"]]
    assert len(default) == 1 and default[0]["num_clusters"] == metrics["k_choice"]["k"]
    assert default[0]["feature"] == "z"  # cdec's own argmax: K-means on its embedding
    assert "chosen: K =" in out


def test_resuming_with_another_k_points_to_recluster(simclr_run, capsys):
    from trainers import fit

    code, _, err = call_entry_point(fit.main, capsys, "--resume", "--out", simclr_run,
                                    "--clusters", "15")
    assert code == 2 and "trainers.recluster --run" in err


def test_a_reclustered_readout_exports_to_savedmodel_and_onnx_with_parity(
        simclr_run, tmp_path, capsys):
    pytest.importorskip("tensorflow")
    from export.onnx import export_onnx
    from export.runtime import load_predictor
    from export.savedmodel import export_run
    from mixem_tf.features import evaluation_features
    from mixem_tf.readouts import load_readout
    from mixem_tf.runs import load_evaluation, load_run

    run = tmp_path / "run"
    shutil.copytree(simclr_run, run)
    assert call_entry_point(recluster.main, capsys, "--run", run, "--clusters", 6,
                            "--readout", "h/l2/kmeans")[0] == 0
    version = export_run(run, tmp_path / "models", "simclr", readout="h/l2/kmeans@6",
                         verbose=False)
    card = json.loads((version / "assets/model_card.json").read_text())
    assert card["num_clusters"] == 6 and card["readout"]["key"] == "h/l2/kmeans@6"
    readout = load_readout(run, "h/l2/kmeans@6")
    assert card["readout"]["temperature"] == pytest.approx(readout.temperature)
    _, config, _ = load_run(run)
    images = load_evaluation(config).images[:100]
    outputs = load_predictor(saved_model=version)(images)
    features = {k: v[:100] for k, v in evaluation_features(run).items()}
    np.testing.assert_array_equal(outputs["cluster"], readout.assign(features))
    np.testing.assert_allclose(outputs["probabilities"], readout.probabilities(features),
                               atol=1e-4)
    report = export_onnx(version, tmp_path / "k6.onnx", verbose=False)  # checks parity
    assert report["onnxruntime"]["embedding"] < 1e-4


@pytest.mark.core
def test_k_taken_from_sub_folders_is_said_with_how_to_choose_otherwise(capsys):
    from mixem_tf.settings import TrainConfig
    from mixem_tf.training import _number_of_clusters

    data = type("Data", (), {"num_classes": 2, "class_names": ("2021", "2022"),
                             "__len__": lambda self: 50})()
    config = TrainConfig(dataset="folder:/photos")
    assert _number_of_clusters(config, data, data, verbose=1) == 2
    err = capsys.readouterr().err
    assert "the 2 sub-folders of /photos (2021, 2022) are taken as classes: K = 2" in err
    assert "--clusters auto" in err and "--folder-labels none" in err
    _number_of_clusters(TrainConfig(dataset="folder:/photos", clusters=5), data, data, 1)
    assert "K = 2" not in capsys.readouterr().err  # K is the user's; the scores still say
