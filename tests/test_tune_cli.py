"""`python -m trainers.tune` end to end, in process: a 2-trial study on digits, its table and
best_config.json (which trainers.fit accepts), resume without re-running a finished trial, a
failed trial recorded and skipped, and refused commands."""

import json

import pytest

pytest.importorskip("keras_tuner")

from cli_helpers import call_entry_point as _call  # noqa: E402
from mixem_tf.cli import run  # noqa: E402
from trainers import fit, tune  # noqa: E402

TINY = ["--dataset", "digits", "--method", "simclr", "--epochs", "1", "--backbone-width", "8",
        "--batch-size", "256", "--readout-settings", "sklearn"]


def _records(out):
    return [json.loads(p.read_text()) for p in sorted((out / "trials").glob("*/objective.json"))]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A finished 2-trial study (stability objective) and its printed output."""
    out = tmp_path_factory.mktemp("tune") / "study"
    import contextlib  # a module-scoped fixture cannot use capsys
    import io

    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = run(tune.main, [*TINY, "--max-trials", "2", "--objective", "stability",
                               "--out", str(out)])
    return out, code, stdout.getvalue(), stderr.getvalue()


@pytest.mark.slow
def test_a_two_trial_study_writes_run_directories_a_table_and_the_chosen_settings(study):
    out, code, stdout, stderr = study
    assert code == 0, stderr
    records = _records(out)
    assert [r["trial"] for r in records] == [0, 1]
    assert all(r["status"] == "completed" for r in records)
    for record in records:  # every trial is an ordinary run directory
        trial = out / "trials" / f"{record['trial']:03d}"
        assert {"config.json", "metrics.json", "readout.npz", "checkpoints"} <= {
            p.name for p in trial.iterdir()}
        assert set(record["objectives"]) == {"stability", "consensus", "silhouette"}
        assert 0 < record["acc"] <= 1
    # the first trial runs at the recipe's values, the second at sampled ones
    assert records[0]["values"] == {"lr": 1e-3, "temperature": 0.5}
    assert records[1]["values"] != records[0]["values"]
    chosen = max(records, key=lambda r: r["objectives"]["stability"])
    assert f"chosen: trial {chosen['trial']:03d}" in stdout
    assert "ACC" in stdout.splitlines()[0] and "temperature" in stdout.splitlines()[0]
    assert stderr.count("trial 1/2:") == 1 and stderr.count("trial 2/2:") == 1
    best = json.loads((out / "best_config.json").read_text())
    saved = json.loads((out / "trials" / f"{chosen['trial']:03d}" / "config.json").read_text())
    assert best == saved["settings"]
    assert (out / "trials.csv").read_text().count("\n") == 3
    assert (out / "tuner" / "oracle.json").is_file()
    import keras

    if keras.backend.backend() == "tensorflow":  # TensorBoard HParams, one run per trial
        assert [p.parent.name for p in sorted((out / "logs").glob("*/events.out.*"))] == [
            "000", "001"]


@pytest.mark.slow
def test_bayesian_optimization_runs_its_trials_as_run_directories(tmp_path, capsys):
    out = tmp_path / "study"
    code, stdout, err = _call(tune.main, capsys, *TINY, "--max-trials", "2",
                              "--tuner", "bayesian", "--out", out)
    assert code == 0, err
    assert [r["status"] for r in _records(out)] == ["completed", "completed"]
    assert "chosen: trial" in stdout


@pytest.mark.slow
def test_hyperband_continues_a_promoted_trial_from_its_parent_run(tmp_path, capsys):
    # --epochs 3, factor 3: three 1-epoch trials, then the best goes on to epoch 3
    out = tmp_path / "study"
    code, stdout, err = _call(tune.main, capsys, *TINY, "--epochs", "3", "--tuner",
                              "hyperband", "--out", out)
    assert code == 0, err
    epochs = {r["trial"]: (out / "trials" / f"{r['trial']:03d}" / "history.csv").read_text()
              .count("\n") - 1 for r in _records(out)}
    promoted = [t for t, n in epochs.items() if n == 3]
    assert promoted and "resuming" in err and "after epoch 1 of 3" in err, (epochs, err)


@pytest.mark.slow
def test_best_config_json_is_accepted_by_fit_as_it_is(study, tmp_path, capsys):
    out = study[0]
    code, stdout, err = _call(fit.main, capsys, "--config", out / "best_config.json",
                              "--out", tmp_path / "best", "--quiet")
    assert code == 0, err
    best = json.loads((out / "best_config.json").read_text())
    trained = json.loads((tmp_path / "best" / "config.json").read_text())["settings"]
    assert trained == best


@pytest.mark.slow
def test_a_stopped_study_continues_without_re_running_a_finished_trial(
        study, tmp_path, capsys, monkeypatch):
    import shutil

    import mixem_tf.training

    out = tmp_path / "study"
    shutil.copytree(study[0], out)
    trained = []
    real = mixem_tf.training.train_run

    def counting(config, run_dir, **kwargs):
        trained.append(run_dir.name)
        return real(config, run_dir, **kwargs)

    monkeypatch.setattr(mixem_tf.training, "train_run", counting)
    args = [*TINY, "--objective", "stability", "--out", out]
    before = (out / "trials" / "000" / "objective.json").read_text()
    code, _, err = _call(tune.main, capsys, *args, "--max-trials", "2")
    assert code == 0 and trained == [], err  # finished: nothing runs again
    assert "2 trial(s) already finished" in err
    code, stdout, err = _call(tune.main, capsys, *args, "--max-trials", "3")
    assert code == 0, err
    assert trained == ["002"]  # only the new trial
    assert (out / "trials" / "000" / "objective.json").read_text() == before
    assert [r["trial"] for r in _records(out)] == [0, 1, 2]


@pytest.mark.slow
def test_an_interrupted_trial_is_resumed_from_its_run_directory(tmp_path, capsys, monkeypatch):
    from mixem_tf.callbacks import HistoryCSV

    out = tmp_path / "study"
    args = [*TINY, "--epochs", "2", "--max-trials", "1", "--out", out]
    written = HistoryCSV.on_epoch_end

    def killed_after_epoch_1(self, epoch, logs=None):
        written(self, epoch, logs)
        raise KeyboardInterrupt

    monkeypatch.setattr(HistoryCSV, "on_epoch_end", killed_after_epoch_1)
    code, _, _ = _call(tune.main, capsys, *args)
    assert code == 130 and _records(out) == []
    monkeypatch.undo()
    code, _, err = _call(tune.main, capsys, *args)
    assert code == 0, err
    assert "resuming" in err and "after epoch 1 of 2" in err
    assert [r["status"] for r in _records(out)] == ["completed"]


@pytest.mark.slow
def test_a_failed_trial_is_recorded_with_its_reason_and_the_study_goes_on(
        tmp_path, capsys, monkeypatch):
    import mixem_tf.training
    from mixem_tf.callbacks import NonFiniteLossError

    real = mixem_tf.training.train_run

    def nan_in_the_first_trial(config, run_dir, **kwargs):
        if run_dir.name == "000":
            raise NonFiniteLossError("epoch 1: the loss is nan; training stopped")
        return real(config, run_dir, **kwargs)

    monkeypatch.setattr(mixem_tf.training, "train_run", nan_in_the_first_trial)
    out = tmp_path / "study"
    code, stdout, err = _call(tune.main, capsys, *TINY, "--max-trials", "2", "--out", out)
    assert code == 0, err
    assert "trial 1: failed: epoch 1: the loss is nan" in err
    assert stdout.splitlines()[1].startswith("000") and "failed" in stdout.splitlines()[1]
    assert "chosen: trial 001" in stdout
    rows = (out / "trials.csv").read_text().splitlines()
    assert rows[1].startswith("0,failed,") and rows[1].endswith("the loss is nan; training stopped")
    assert rows[2].startswith("1,completed,")


def test_too_many_failures_in_a_row_stop_the_study_with_one_line(tmp_path, capsys, monkeypatch):
    import mixem_tf.training

    def refused(config, run_dir, **kwargs):
        raise ValueError("batch size 5000 is larger than the training data")

    monkeypatch.setattr(mixem_tf.training, "train_run", refused)
    code, _, err = _call(tune.main, capsys, *TINY, "--max-trials", "5",
                         "--max-consecutive-failures", "2", "--out", tmp_path / "study")
    assert code == 2
    assert err.strip().splitlines()[-1] == (
        "error: the study stopped after 2 failed trials in a row; the last: batch size 5000 "
        "is larger than the training data")


@pytest.mark.parametrize("space, reason", [
    ('{"lr": {"min": 1, "max": 0.1}}', "search space: lr: min and max must be numbers"),
    ('{"lr": 3}', "search space: lr must be a JSON object"),
    ('{"num_components": {"min": 2, "max": 4}}',
     "num_components: not a setting of method simclr"),
    ("[", "is not valid JSON"),
])
def test_a_bad_space_file_is_one_line_before_anything_runs(tmp_path, capsys, space, reason):
    path = tmp_path / "space.json"
    path.write_text(space)
    out = tmp_path / "study"
    code, _, err = _call(tune.main, capsys, *TINY, "--space", path, "--out", out)
    assert code == 2 and reason in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_another_command_on_an_existing_study_needs_overwrite(study, tmp_path, capsys):
    import shutil

    out = tmp_path / "study"
    shutil.copytree(study[0], out)
    code, _, err = _call(tune.main, capsys, *TINY, "--max-trials", "2", "--out", out)
    assert code == 2 and "holds a study with other settings (objective)" in err, err
    assert "--overwrite" in err


@pytest.mark.parametrize("args, reason", [
    (["--max-trials", "0"], "max-trials must be a positive integer"),
    (["--epochs", "0"], "epochs must be positive"),
    (["--method", "dino"], "unknown method"),
])
def test_bad_arguments_are_one_line_and_touch_nothing(tmp_path, capsys, args, reason):
    out = tmp_path / "study"
    code, _, err = _call(tune.main, capsys, *TINY, *args, "--out", out)
    assert code == 2 and reason in err, err
    assert not out.exists()
