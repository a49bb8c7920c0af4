"""A run that cannot go on ends in one line saying what is kept, and loses nothing: a run in
use by another process, a read-only run folder, a full disk, a corrupt latest checkpoint, and
SIGTERM / SIGINT. Real mounts (a small tmpfs, a read-only bind mount) where the machine allows
them, an injected OSError otherwise."""

import errno
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

tf = pytest.importorskip("tensorflow")

from cli_helpers import call_entry_point  # noqa: E402
from mixem_tf import checkpoints  # noqa: E402
from mixem_tf.runlock import LOCK_FILE  # noqa: E402
from trainers.fit import main as fit_main  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--dataset", "digits", "--method", "simclr", "--batch-size", "256", "--quiet",
        "--deterministic", "--backbone-width", "8"]
HOLDER = """
import sys, time
from mixem_tf.runlock import run_lock
with run_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(120)
"""


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory):
    """A 2-epoch SimCLR run on digits (checkpoints of epochs 1 and 2), copied by each test."""
    from mixem_tf.settings import TrainConfig
    from mixem_tf.training import train_run

    out = tmp_path_factory.mktemp("safety") / "run"
    train_run(TrainConfig(dataset="digits", method="simclr", epochs=2, batch_size=256,
                          backbone_width=8, readout_settings="sklearn"), out, verbose=0,
              deterministic=True)
    return out


def _snapshot(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def _history_epochs(run_dir):
    lines = (Path(run_dir) / "history.csv").read_text().splitlines()[1:]
    return [int(line.split(",")[0]) for line in lines]


def _one_error_line(err, code, expected_code):
    assert code == expected_code, err
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    return errors[0]


def _mount(*args):
    if os.geteuid() != 0:
        pytest.skip("mounting needs root")
    done = subprocess.run(["mount", *map(str, args)], capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"mount is not permitted here: {done.stderr.strip()}")


# -- 1. one writer at a time -----------------------------------------------------------------------
def test_a_run_in_use_refuses_resume_overwrite_export_recluster_and_a_study(
        two_epochs, tmp_path, capsys):
    from export.savedmodel import main as export_main
    from trainers.recluster import main as recluster_main
    from trainers.tune import main as tune_main

    run = tmp_path / "run"
    shutil.copytree(two_epochs, run)
    (tmp_path / "study").mkdir()
    before = _snapshot(run)
    holders = [subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], cwd=ROOT,
                                stdout=subprocess.PIPE, text=True)
               for folder in (run, tmp_path / "study")]
    try:
        assert all(h.stdout.readline().strip() == "held" for h in holders)
        for main, args in [(fit_main, ["--out", run, "--resume"]),
                           (fit_main, [*FAST, "--epochs", "1", "--out", run, "--overwrite"]),
                           (export_main, ["--run", run, "--base-dir", tmp_path / "models"]),
                           (recluster_main, ["--run", run, "--clusters", "5"]),
                           (tune_main, ["--dataset", "digits", "--epochs", "1", "--quiet",
                                        "--out", tmp_path / "study"])]:
            code, _, err = call_entry_point(main, capsys, *args)
            line = _one_error_line(err, code, 2)
            holder = holders[main is tune_main]
            assert f"is in use by python -c (pid {holder.pid} on " in line and "since" in line
    finally:
        for holder in holders:
            holder.kill()
            holder.wait()
    left = _snapshot(run)
    assert left.pop(LOCK_FILE) and left == before  # the killed holder's lock file stays
    assert not (tmp_path / "models").exists() and os.listdir(tmp_path / "study") == [LOCK_FILE]


# -- 2. a full disk --------------------------------------------------------------------------------
def _fill_disk(folder, leave: int) -> Path:
    stats = os.statvfs(folder)
    filler = Path(folder) / "filler"
    with filler.open("wb") as handle:
        handle.write(b"\0" * max(stats.f_bavail * stats.f_frsize - leave, 0))
    return filler


def _no_space_for_epoch_3(monkeypatch):
    """The checkpoint of epoch 3 fails half-way with ENOSPC; returns how to free the space."""
    real = checkpoints.replace_atomic

    def failing(path, write):
        if path.name != "epoch-0003.npz":
            return real(path, write)

        def half_then_full(handle):
            handle.write(b"PK\3\4" * 1000)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        return real(path, half_then_full)

    monkeypatch.setattr(checkpoints, "replace_atomic", failing)
    return lambda: monkeypatch.setattr(checkpoints, "replace_atomic", real)


def _tmpfs_full_at_epoch_3(tmp_path):
    """The run copied onto a small tmpfs filled up to less than a checkpoint (600 kB) is left;
    returns how to free the space."""
    disk = tmp_path / "disk"
    disk.mkdir()
    _mount("-t", "tmpfs", "-o", "size=8m", "tmpfs", disk)
    shutil.copytree(tmp_path / "run.src", disk / "run")
    return _fill_disk(disk, leave=300_000).unlink


@pytest.fixture
def umount(tmp_path):
    """Unmounts what the test mounted; lazily, as a writer the test left open (TensorBoard's,
    after a failure) would keep the mount busy."""
    yield
    for name in ("disk", "ro"):
        subprocess.run(["umount", "-l", str(tmp_path / name)], capture_output=True)


@pytest.mark.parametrize("disk", ["tmpfs", "injected"])
def test_a_full_disk_at_a_checkpoint_is_one_line_naming_what_is_kept_and_resumes(
        disk, two_epochs, tmp_path, capsys, monkeypatch, umount):
    shutil.copytree(two_epochs, tmp_path / "run.src")
    if disk == "tmpfs":
        free = _tmpfs_full_at_epoch_3(tmp_path)
        run = tmp_path / "disk" / "run"
    else:
        run = tmp_path / "run.src"
        free = _no_space_for_epoch_3(monkeypatch)
    kept = {name: digest for name, digest in _snapshot(run / "checkpoints").items()
            if name.endswith(".npz")}

    code, _, err = call_entry_point(fit_main, capsys, "--out", run, "--resume", "--epochs", "4",
                                    "--quiet")
    line = _one_error_line(err, code, 1)
    assert line == (f"error: no space left on device while saving the checkpoint of epoch 3 "
                    f"({run / 'checkpoints' / 'epoch-0003.npz'}); the checkpoints of epochs 1 "
                    f"and 2 are intact; free some space, then resume with python -m "
                    f"trainers.fit --resume --out {run}"), line
    after = _snapshot(run / "checkpoints")
    assert {k: v for k, v in after.items() if k.endswith(".npz")} == kept
    assert not [p for p in run.rglob("*") if p.name.endswith(".tmp") or p.name == LOCK_FILE]
    assert _history_epochs(run) == [1, 2]

    free()
    code, _, err = call_entry_point(fit_main, capsys, "--out", run, "--resume", "--quiet")
    assert code == 0, err
    assert checkpoints.latest_checkpoint(run / "checkpoints")[1]["epoch"] == 4
    assert _history_epochs(run) == [1, 2, 3, 4]


# -- 3. a read-only run folder ---------------------------------------------------------------------
@pytest.mark.parametrize("how", ["bind mount", "permissions"])
def test_resuming_a_read_only_run_is_one_line_before_any_work(
        how, two_epochs, tmp_path, capsys, monkeypatch, umount):
    import mixem_tf.data

    source = tmp_path / "run"
    shutil.copytree(two_epochs, source)
    if how == "bind mount":
        run = tmp_path / "ro"
        run.mkdir()
        _mount("--bind", source, run)
        _mount("-o", "remount,bind,ro", run)
    else:
        if os.geteuid() == 0:
            pytest.skip("root writes into a folder without write permission")
        run = source
        for folder in (run / "checkpoints", run):
            folder.chmod(0o555)
    before = _snapshot(run)
    loaded = []
    monkeypatch.setattr(mixem_tf.data, "load_protocol",
                        lambda *a, **k: loaded.append(1) or pytest.fail("data loaded"))
    try:
        code, _, err = call_entry_point(fit_main, capsys, "--out", run, "--resume",
                                        "--epochs", "3")
    finally:
        for folder in (source, source / "checkpoints"):
            folder.chmod(0o755)
    line = _one_error_line(err, code, 2)
    assert f"--resume: cannot write in {run}" in line and "nothing was changed" in line, line
    assert not loaded and _snapshot(run) == before


# -- 4. falling back past a corrupt checkpoint -----------------------------------------------------
def test_a_fallback_warns_once_and_the_history_drops_the_epochs_trained_again(two_epochs,
                                                                               tmp_path):
    from mixem_tf.training import train_run

    run = tmp_path / "run"
    shutil.copytree(two_epochs, run)
    latest = run / "checkpoints" / "epoch-0002.npz"
    latest.write_bytes(latest.read_bytes()[:1000])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train_run(None, run, resume=True, epochs=3, verbose=0, deterministic=True)
    fallbacks = [w for w in caught if w.category is checkpoints.CheckpointWarning]
    assert len(fallbacks) == 1 and "epoch-0002.npz" in str(fallbacks[0].message)
    assert _history_epochs(run) == [1, 2, 3]


def test_a_history_row_cut_short_by_a_kill_is_dropped_too(tmp_path):
    from mixem_tf.callbacks import ClusterSizeMonitor, HistoryCSV

    history = tmp_path / "history.csv"
    history.write_text("epoch,loss\n1,0.5\n2,0.4\n3,0.3\n4,0.")
    HistoryCSV(history).forget_epochs_after(2)
    assert history.read_text() == "epoch,loss\n1,0.5\n2,0.4\n"
    sizes = tmp_path / "occupancy.jsonl"
    sizes.write_text("".join(json.dumps({"epoch": e, "occupancy": [1.0]}) + "\n"
                             for e in (1, 2, 3)) + '{"epoch": 4, "occ')
    ClusterSizeMonitor(None, "pi", sizes).forget_epochs_after(1)
    assert [json.loads(line)["epoch"] for line in sizes.read_text().splitlines()] == [1]


# -- 5. stop signals -------------------------------------------------------------------------------
@pytest.mark.slow
def test_sigterm_stops_at_a_step_within_seconds_keeping_the_last_epoch(tmp_path):
    # The safety suite's one subprocess: a real process and a real signal.
    run = tmp_path / "run"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    process = subprocess.Popen([sys.executable, "-m", "trainers.fit", *FAST, "--epochs", "500",
                                "--out", str(run)], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    pointer = run / "checkpoints" / "checkpoint.json"
    deadline = time.time() + 300
    while not pointer.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    _, err = process.communicate(timeout=120)
    took = time.monotonic() - sent
    assert process.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err
    match = re.fullmatch(r"stopped by SIGTERM after epoch (\d+); resume with python -m "
                         r"trainers\.fit --resume --out (.+)", err.strip().splitlines()[-1])
    assert match and match.group(2) == str(run), err
    epoch = int(match.group(1))
    assert checkpoints.latest_checkpoint(run / "checkpoints")[1]["epoch"] == epoch
    assert _history_epochs(run) == list(range(1, epoch + 1))  # no row of a partial epoch
    assert not (run / LOCK_FILE).exists()
    assert took < 30, f"{took:.1f} s from SIGTERM to exit"  # a step here is ~0.1 s


def test_sigint_in_an_epoch_keeps_the_epoch_before_and_exits_130(two_epochs, tmp_path, capsys,
                                                                  monkeypatch):
    from mixem_tf.callbacks import Throughput

    run = tmp_path / "run"
    shutil.copytree(two_epochs, run)
    real = Throughput.on_train_batch_end

    def interrupt_at_epoch_4_step_3(self, batch, logs=None):
        real(self, batch, logs)
        if len(self.per_epoch) == 1 and batch == 2:  # the second epoch trained (epoch 4)
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(Throughput, "on_train_batch_end", interrupt_at_epoch_4_step_3)
    code, _, err = call_entry_point(fit_main, capsys, "--out", run, "--resume", "--epochs", "6")
    assert code == 130, err
    assert err.strip().splitlines()[-1] == (f"stopped by SIGINT after epoch 3; resume with "
                                            f"python -m trainers.fit --resume --out {run}")
    assert checkpoints.latest_checkpoint(run / "checkpoints")[1]["epoch"] == 3
    assert _history_epochs(run) == [1, 2, 3]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back


@pytest.mark.parametrize("failure", ["SIGTERM", "full disk"])
def test_a_study_stopped_in_a_trial_says_to_rerun_the_same_tune_command(failure, tmp_path,
                                                                        capsys, monkeypatch):
    pytest.importorskip("keras_tuner")
    import mixem_tf.training
    from mixem_tf.interrupts import TrainingStopped
    from mixem_tf.run_failures import RunWriteError
    from trainers.tune import main as tune_main

    def stopped_in_the_first_trial(config, run_dir, **kwargs):
        if failure == "SIGTERM":
            raise TrainingStopped(signal.SIGTERM, "stopped by SIGTERM after epoch 1; resume "
                                  f"with python -m trainers.fit --resume --out {run_dir}")
        raise RunWriteError("no space left on device while writing x", "the checkpoint of "
                            "epoch 1 is intact; free some space", "python -m trainers.fit ...")

    monkeypatch.setattr(mixem_tf.training, "train_run", stopped_in_the_first_trial)
    code, _, err = call_entry_point(tune_main, capsys, "--dataset", "digits", "--epochs", "1",
                                    "--max-trials", "3", "--quiet", "--out", tmp_path / "study")
    last = err.strip().splitlines()[-1]
    assert "Traceback" not in err
    if failure == "SIGTERM":
        assert code == 143 and last == (
            "stopped by SIGTERM during a trial (finished trials and the trial's last checkpoint "
            "are kept); continue the study with the same python -m trainers.tune command")
    else:
        assert code == 1 and last == (
            "error: no space left on device while writing x; the checkpoint of epoch 1 is "
            "intact; free some space, then resume with the same python -m trainers.tune "
            "command")
    assert not (tmp_path / "study" / LOCK_FILE).exists()
