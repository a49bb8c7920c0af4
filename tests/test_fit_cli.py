"""`python -m trainers.fit` end to end: run directory, resume after a kill, NaN, bad arguments."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mixem_tf import checkpoints

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--dataset", "digits", "--method", "simclr", "--batch-size", "256", "--quiet", "--deterministic"]


def _fit(*args, check=True, **kwargs):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    process = subprocess.run([sys.executable, "-m", "trainers.fit", *args], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=600, **kwargs)
    if check:
        assert process.returncode == 0, process.stderr[-3000:]
    return process


def _weights(run_dir):
    path, record = checkpoints.latest_checkpoint(Path(run_dir) / "checkpoints")
    return record["epoch"], dict(checkpoints.load_variables(path, "model"))


@pytest.mark.slow
def test_fit_writes_a_complete_run_directory(tmp_path):
    out = tmp_path / "run"
    process = _fit(*FAST, "--epochs", "2", "--out", str(out))
    config = json.loads((out / "config.json").read_text())
    assert config["settings"]["method"] == "simclr" and config["settings"]["epochs"] == 2
    assert config["backend"] in ("tensorflow", "jax") and "keras" in config["versions"]
    metrics = json.loads((out / "metrics.json").read_text())
    default = [row for row in metrics["readouts"] if row["default"]]
    assert len(default) == 1 and sum(default[0]["cluster_sizes"]) == 1797
    assert 0.0 <= default[0]["acc"] <= 1.0
    assert (out / "history.csv").read_text().count("\n") == 3  # header + 2 epochs
    assert _weights(out)[0] == 2
    assert "ACC" in process.stdout and "nt_xent" in (out / "history.csv").read_text()


@pytest.mark.slow
def test_resume_after_a_kill_ends_with_the_weights_of_an_uninterrupted_run(tmp_path):
    whole, interrupted = tmp_path / "whole", tmp_path / "interrupted"
    _fit(*FAST, "--epochs", "2", "--out", str(whole))

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

    resumed = _fit("--out", str(interrupted), "--resume", "--quiet")
    assert f"after epoch {killed_at}" in resumed.stderr
    epoch_a, weights_a = _weights(whole)
    epoch_b, weights_b = _weights(interrupted)
    assert epoch_a == epoch_b == 2
    assert weights_a.keys() == weights_b.keys()
    for name in weights_a:
        np.testing.assert_array_equal(weights_a[name], weights_b[name], err_msg=name)


@pytest.mark.slow
def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    from keras import ops

    from mixem_tf.callbacks import NonFiniteLossError
    from mixem_tf.methods import SimCLR
    from mixem_tf.recipes import TrainConfig
    from mixem_tf.training import train_run

    healthy = SimCLR.loss_terms
    steps_per_epoch = 1797 // 256

    def poisoned(self, views):  # NaN from the second epoch on
        terms = healthy(self, views)
        broken = self.optimizer.iterations >= steps_per_epoch
        return {k: ops.where(broken, float("nan"), v) for k, v in terms.items()}

    monkeypatch.setattr(SimCLR, "loss_terms", poisoned)
    config = TrainConfig(method="simclr", dataset="digits", batch_size=256, epochs=3)
    with pytest.raises(NonFiniteLossError, match=r"epoch 2.*last good checkpoint \(epoch 1\)"):
        train_run(config, tmp_path / "run", verbose=0)
    epoch, weights = _weights(tmp_path / "run")
    assert epoch == 1
    assert all(np.all(np.isfinite(w)) for w in weights.values())
    assert not (tmp_path / "run" / "metrics.json").exists()


@pytest.mark.parametrize("args, reason", [
    (["--dataset", "imagenet"], "unknown dataset"),
    (["--method", "dino"], "unknown method"),
    (["--clusters", "1"], "at least 2"),
    (["--batch-size", "5000"], "larger than the training data"),
    (["--optimizer", "lamb"], "optimizer must be one of"),
    (["--epochs", "0"], "epochs must be positive"),
    (["--backbone-width", "0"], "backbone_width must be positive"),
    (["--term-weights", "3"], "term_weights must be a JSON object, got 3"),
    (["--term-weights", '{"pull": "a"}'], "term weight 'pull' must be a number >= 0"),
    (["--term-weights", '{"pul": 0.1}'], "unknown MIX'EM terms ['pul']"),
    (["--start-epochs", '{"pull": -1}'], "start epochs must be ints >= 0"),
])
def test_bad_arguments_exit_with_one_line_and_touch_nothing(tmp_path, args, reason):
    out = tmp_path / "run"
    process = _fit("--dataset", "digits", *args, "--out", str(out), check=False)
    assert process.returncode == 2
    assert reason in process.stderr
    errors = [line for line in process.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in process.stderr, process.stderr
    assert not out.exists()


def test_a_config_file_value_of_the_wrong_type_is_named(tmp_path):
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps({"image_size": "28px"}))
    out = tmp_path / "run"
    process = _fit("--dataset", "digits", "--config", str(settings), "--out", str(out),
                   check=False)
    assert process.returncode == 2 and "Traceback" not in process.stderr, process.stderr
    assert "image_size must be an integer, got '28px'" in process.stderr
    assert not out.exists()


def test_existing_out_needs_overwrite_and_is_left_alone(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    process = _fit("--dataset", "digits", "--out", str(out), check=False)
    assert process.returncode == 2 and "--overwrite" in process.stderr
    assert (out / "precious.txt").read_text() == "keep me"


def test_unwritable_out_is_rejected(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    process = _fit("--dataset", "digits", "--out", str(blocker / "run"), check=False)
    assert process.returncode == 2 and "writable" in process.stderr


def test_resume_of_a_folder_without_a_run_is_rejected(tmp_path):
    process = _fit("--out", str(tmp_path), "--resume", check=False)
    assert process.returncode == 2 and "holds no run" in process.stderr
    assert list(tmp_path.iterdir()) == []
