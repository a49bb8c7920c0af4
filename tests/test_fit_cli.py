"""`python -m trainers.fit` end to end: run directory, resume, NaN, and refused commands that
lose nothing. In process (`mixem_tf.cli.run`), except the one smoke test that kills a real
process."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cli_helpers import call_entry_point
from mixem_tf import checkpoints
from trainers.fit import main

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--dataset", "digits", "--method", "simclr", "--batch-size", "256", "--quiet",
        "--deterministic", "--backbone-width", "8"]


def _fit(capsys, *args):
    """(exit code, stdout, stderr) of `trainers.fit` run in this process."""
    return call_entry_point(main, capsys, *args)


def _weights(run_dir):
    """(epoch, the model's arrays in variable order) of a run's latest checkpoint; variable
    names may differ between processes (Keras numbers layers per process)."""
    path, record = checkpoints.latest_checkpoint(Path(run_dir) / "checkpoints")
    return record["epoch"], [value for _, value in checkpoints.load_variables(path, "model")]


def _snapshot(folder):
    """{relative path: sha256} of every file under `folder`."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def _one_line_error(code, err, reason):
    assert code == 2, err
    assert reason in err, err
    assert "Traceback" not in err
    assert len([line for line in err.splitlines() if "error:" in line]) == 1, err


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished 1-epoch SimCLR run on digits, copied by the tests that need one."""
    from mixem_tf.settings import TrainConfig
    from mixem_tf.training import train_run

    out = tmp_path_factory.mktemp("fit_cli") / "run"
    config = TrainConfig(dataset="digits", method="simclr", epochs=1, batch_size=256,
                         backbone_width=8, readout_settings="sklearn")
    train_run(config, out, verbose=0, deterministic=True)
    return out


@pytest.fixture
def run_copy(finished_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    return copy


@pytest.mark.slow
def test_fit_writes_a_complete_run_directory(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, _ = _fit(capsys, *FAST, "--epochs", "2", "--out", out)
    assert code == 0
    config = json.loads((out / "config.json").read_text())
    assert config["settings"]["method"] == "simclr" and config["settings"]["epochs"] == 2
    assert config["settings"]["options"]["projection_dim"] == 32
    assert config["backend"] in ("tensorflow", "jax") and "keras" in config["versions"]
    metrics = json.loads((out / "metrics.json").read_text())
    default = [row for row in metrics["readouts"] if row["default"]]
    assert len(default) == 1 and sum(default[0]["cluster_sizes"]) == 1797
    assert default[0]["acc"] > 0.5  # random clusters of 10 balanced digits score about 0.2
    assert (out / "history.csv").read_text().count("\n") == 3  # header + 2 epochs
    assert _weights(out)[0] == 2
    assert "ACC" in stdout and "nt_xent" in (out / "history.csv").read_text()


@pytest.mark.slow
def test_resume_after_a_kill_ends_with_the_weights_of_an_uninterrupted_run(tmp_path, capsys):
    # The entry point's one subprocess test: a real process, killed with SIGKILL.
    whole, interrupted = tmp_path / "whole", tmp_path / "interrupted"
    assert _fit(capsys, *FAST, "--epochs", "2", "--out", whole)[0] == 0

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    process = subprocess.Popen([sys.executable, "-m", "trainers.fit", *FAST, "--epochs", "2",
                                "--out", str(interrupted)], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pointer = interrupted / "checkpoints" / "checkpoint.json"
    deadline = time.time() + 300
    while not pointer.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = json.loads(pointer.read_text())["epoch"]
    assert killed_at < 2, "the run finished before it could be killed"

    code, _, err = _fit(capsys, "--out", interrupted, "--resume", "--quiet")
    assert code == 0 and f"after epoch {killed_at}" in err
    epoch_a, weights_a = _weights(whole)
    epoch_b, weights_b = _weights(interrupted)
    assert epoch_a == epoch_b == 2
    assert len(weights_a) == len(weights_b)
    for index, (a, b) in enumerate(zip(weights_a, weights_b)):
        np.testing.assert_array_equal(a, b, err_msg=str(index))


@pytest.mark.slow
def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    from keras import ops

    from mixem_tf.callbacks import NonFiniteLossError
    from mixem_tf.methods import SimCLR
    from mixem_tf.settings import TrainConfig
    from mixem_tf.training import train_run

    healthy = SimCLR.loss_terms
    steps_per_epoch = 1797 // 256

    def poisoned(self, views):  # NaN from the second epoch on
        terms = healthy(self, views)
        broken = self.optimizer.iterations >= steps_per_epoch
        return {k: ops.where(broken, float("nan"), v) for k, v in terms.items()}

    monkeypatch.setattr(SimCLR, "loss_terms", poisoned)
    config = TrainConfig(method="simclr", dataset="digits", batch_size=256, epochs=3,
                         backbone_width=8, readout_settings="sklearn")
    with pytest.raises(NonFiniteLossError, match=r"epoch 2.*last good checkpoint \(epoch 1\)"):
        train_run(config, tmp_path / "run", verbose=0)
    epoch, weights = _weights(tmp_path / "run")
    assert epoch == 1
    assert all(np.all(np.isfinite(w)) for w in weights)
    assert not (tmp_path / "run" / "metrics.json").exists()


@pytest.mark.parametrize("args, reason", [
    (["--dataset", "imagenet"], "unknown dataset"),
    (["--method", "dino"], "unknown method"),
    (["--clusters", "1"], "expected K >= 2"),
    (["--clusters", "5000"], "more clusters than images (1797)"),
    (["--batch-size", "5000"], "larger than the training data"),
    (["--batch-size", "1"], "batch_size must be at least 2"),
    (["--optimizer", "lamb"], "optimizer must be one of"),
    (["--epochs", "0"], "epochs must be positive"),
    (["--backbone-width", "0"], "backbone_width must be positive"),
    (["--backbone", "resnet50"], "resnet50"),
    (["--term-weights", "3"], "term_weights must be a JSON object, got 3"),
    (["--term-weights", '{"pull": "a"}'], "term weight 'pull' must be a number >= 0"),
    (["--term-weights", '{"pul": 0.1}'], "unknown MIX'EM terms ['pul']"),
    (["--start-epochs", '{"pull": -1}'], "start epochs must be ints >= 0"),
    (["--method", "simclr", "--num-components", "3"],
     "num_components: not a setting of method simclr"),
    (["--dataset", "folder:/etc/passwd"], "not a folder"),
    (["--out", "/proc/mixem-run"], "--out /proc/mixem-run"),
])
def test_bad_arguments_exit_with_one_line_and_touch_nothing(tmp_path, capsys, args, reason):
    out = tmp_path / "run"
    code, _, err = _fit(capsys, "--dataset", "digits", "--out", out, *args)
    _one_line_error(code, err, reason)
    assert not out.exists()


@pytest.mark.parametrize("args, reason", [
    (["--backbone", "resnet50"], "resnet50"),
    (["--stem", "foo"], "stem"),
    (["--projection-dim", "0"], "projection_dim must be positive"),
    (["--method", "mixem", "--embedding-dim", "0"], "embedding_dim must be positive"),
    (["--method", "mixem", "--num-components", "1"], "num_components must be >= 2"),
    (["--method", "mixem", "--num-components", "5"], "num_components (5) must be at least"),
])
def test_a_refused_overwrite_keeps_every_file_of_the_run(run_copy, capsys, args, reason):
    before = _snapshot(run_copy)
    code, _, err = _fit(capsys, *FAST, "--epochs", "1", "--out", run_copy, "--overwrite", *args)
    _one_line_error(code, err, reason)
    assert _snapshot(run_copy) == before


def test_a_folder_whose_start_never_reached_a_checkpoint_starts_afresh(run_copy, capsys):
    shutil.rmtree(run_copy / "checkpoints")  # as after a kill during epoch 1
    code, _, err = _fit(capsys, "--out", run_copy, "--resume")
    _one_line_error(code, err, "has no checkpoint yet; start it again (without --resume)")
    code, _, err = _fit(capsys, *FAST, "--epochs", "1", "--out", run_copy)
    assert code == 0, err
    assert _weights(run_copy)[0] == 1


def test_resume_keeps_a_longer_target_and_says_when_there_is_nothing_to_do(
        run_copy, capsys, monkeypatch):
    from mixem_tf.callbacks import HistoryCSV

    written = HistoryCSV.on_epoch_end

    def killed_after_epoch_2(self, epoch, logs=None):
        written(self, epoch, logs)
        if epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(HistoryCSV, "on_epoch_end", killed_after_epoch_2)
    code, _, err = _fit(capsys, "--out", run_copy, "--resume", "--epochs", "3", "--quiet")
    assert code == 130 and _weights(run_copy)[0] == 2
    monkeypatch.undo()
    assert json.loads((run_copy / "config.json").read_text())["settings"]["epochs"] == 3

    code, _, err = _fit(capsys, "--out", run_copy, "--resume", "--quiet")
    assert code == 0 and "resuming" in err and "after epoch 2 of 3" in err, err
    assert _weights(run_copy)[0] == 3
    code, _, err = _fit(capsys, "--out", run_copy, "--resume", "--epochs", "2", "--quiet")
    assert code == 0 and "already trained 3 epochs (--epochs 2): nothing to train" in err
    assert json.loads((run_copy / "config.json").read_text())["settings"]["epochs"] == 3
    _one_line_error(*_fit(capsys, "--out", run_copy, "--resume", "--epochs", "0")[::2],
                    "--epochs must be a positive integer, got 0")


def test_resume_errors_name_the_resume_flag(tmp_path, capsys):
    code, _, err = _fit(capsys, "--out", tmp_path, "--resume")
    _one_line_error(code, err, f"--resume: {tmp_path} holds no run")
    assert list(tmp_path.iterdir()) == []


def _image_folder(root, classes, per_class=4):
    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(
                root / name / f"{i}.png")
    (root / classes[0] / "notes.txt").write_text("not an image")


def test_a_relative_folder_is_stored_absolute_and_resumes_from_elsewhere(
        tmp_path, capsys, monkeypatch):
    _image_folder(tmp_path / "data" / "images", ["cats", "dogs"])
    monkeypatch.chdir(tmp_path / "data")
    args = ["--dataset", "folder:images", "--backbone", "convnet", "--backbone-width", "8",
            "--image-size", "8", "--batch-size", "4", "--epochs", "1", "--quiet"]
    code, _, err = _fit(capsys, *args, "--out", tmp_path / "run")
    assert code == 0, err
    assert "9 files found, 8 images used, 1 skipped" in err
    assert (tmp_path / "run" / "skipped_files.csv").read_text().count("notes.txt") == 1
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["settings"]
    assert saved["dataset"] == f"folder:{tmp_path / 'data' / 'images'}"
    monkeypatch.chdir(tmp_path)
    code, _, err = _fit(capsys, "--out", tmp_path / "run", "--resume", "--epochs", "2")
    assert code == 0, err


def test_one_cluster_from_one_sub_folder_says_where_k_came_from(tmp_path, capsys):
    _image_folder(tmp_path / "images", ["only"])
    code, _, err = _fit(capsys, "--dataset", f"folder:{tmp_path / 'images'}",
                        "--image-size", "8", "--out", tmp_path / "run")
    _one_line_error(code, err, "K = 1 comes from the 1 sub-folder(s) of")
    assert "--clusters" in err and not (tmp_path / "run").exists()


def test_a_config_file_value_of_the_wrong_type_is_named(tmp_path, capsys):
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps({"image_size": "28px"}))
    out = tmp_path / "run"
    code, _, err = _fit(capsys, "--dataset", "digits", "--config", settings, "--out", out)
    _one_line_error(code, err, "image_size must be an integer, got '28px'")
    assert not out.exists()


def test_existing_out_needs_overwrite_and_is_left_alone(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    code, _, err = _fit(capsys, "--dataset", "digits", "--out", out)
    _one_line_error(code, err, "--overwrite")
    assert (out / "precious.txt").read_text() == "keep me"


def test_unwritable_out_is_rejected(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, _, err = _fit(capsys, "--dataset", "digits", "--out", blocker / "run")
    _one_line_error(code, err, "writable")
