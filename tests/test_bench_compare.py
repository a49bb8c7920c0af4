"""bench.methods_compare's aggregation: summary rows and seed-paired differences, worked by hand."""

import pytest

pytestmark = pytest.mark.core


def _scores(acc):
    return {"acc": acc, "nmi": acc - 0.1, "ari": acc - 0.2}


@pytest.fixture()
def runs():
    mixem = {0: {"kmeans z l2": _scores(0.70), "kmeans h l2": _scores(0.60)},
             1: {"kmeans z l2": _scores(0.60), "kmeans h l2": _scores(0.62)}}
    simclr = {0: {"kmeans z l2": _scores(0.72), "kmeans h l2": _scores(0.65)},
              1: {"kmeans z l2": _scores(0.56), "kmeans h l2": _scores(0.57)},
              2: {"kmeans z l2": _scores(0.90), "kmeans h l2": _scores(0.90)}}
    return mixem, simclr


def test_summary_marks_the_current_default_and_averages_every_seed(runs):
    from bench.methods_compare import summary_rows

    rows = {row["read-out"]: row for row in summary_rows("mixem", runs[0], [10.0, 30.0])}
    assert rows["kmeans z l2"]["method"] == "mixem *"  # MixEM.default_readout
    assert rows["kmeans h l2"]["method"] == "mixem"
    assert rows["kmeans z l2"]["acc"] == "0.6500 ± 0.0500"
    assert rows["kmeans h l2"]["acc"] == "0.6100 ± 0.0100"
    assert rows["kmeans z l2"]["wall s"] == "20"
    simclr = {row["read-out"]: row["method"] for row in summary_rows("simclr", runs[1], [1.0])}
    assert simclr == {"kmeans z l2": "simclr", "kmeans h l2": "simclr *"}


def test_paired_differences_use_shared_seeds_and_count_wins(runs):
    from bench.methods_compare import paired_rows

    rows = {row["comparison"]: row for row in paired_rows("mixem", runs[0], "simclr", runs[1])}
    # seed 2 has no MIX'EM run, so it is left out of both comparisons
    against_z = rows["mixem kmeans z l2 - simclr kmeans z l2"]
    assert against_z["acc"] == "+0.0100 ± 0.0300 (1/2)"  # differences -0.02 and +0.04
    against_h = rows["mixem kmeans z l2 - simclr kmeans h l2 *"]
    assert against_h["acc"] == "+0.0400 ± 0.0100 (2/2)"  # differences +0.05 and +0.03
    assert against_h["nmi"] == against_h["acc"]


def test_settings_can_be_scoped_to_one_method():
    from bench.methods_compare import _setting, settings_for

    given = [_setting("image_size=16"), _setting("mixem:num_components=20"),
             _setting("simclr:projection_dim=64"), _setting("dataset=fashion_mnist")]
    assert given[1] == ("mixem", "num_components", 20)  # JSON value
    assert given[3] == (None, "dataset", "fashion_mnist")  # not JSON: kept as text
    assert settings_for("mixem", given) == {"image_size": 16, "num_components": 20,
                                            "dataset": "fashion_mnist"}
    assert settings_for("simclr", given) == {"image_size": 16, "projection_dim": 64,
                                             "dataset": "fashion_mnist"}


@pytest.mark.parametrize("text, problem", [("image_size", "KEY=VALUE"),
                                           ("nosuch=1", "not a TrainConfig field"),
                                           ("dino:epochs=3", "unknown method 'dino'")])
def test_bad_settings_are_named(text, problem):
    import argparse

    from bench.methods_compare import _setting

    with pytest.raises(argparse.ArgumentTypeError, match=problem):
        _setting(text)


def test_seed_placeholder_is_filled_per_run():
    from bench.methods_compare import for_seed

    settings = {"init_from": "runs/simclr-s{seed}", "epochs": 3, "term_weights": {"pull": 0}}
    assert for_seed(settings, 4) == {"init_from": "runs/simclr-s4", "epochs": 3,
                                     "term_weights": {"pull": 0}}
    assert settings["init_from"] == "runs/simclr-s{seed}"  # the shared settings are untouched


def test_a_missing_init_from_run_is_named_before_anything_runs(tmp_path, capsys):
    from bench.methods_compare import main

    with pytest.raises(SystemExit) as stop:
        main(["--dataset", "digits", "--epochs", "1", "--seeds", "0", "1", "--methods", "mixem",
              "--set", f"mixem:init_from={tmp_path}/simclr-s{{seed}}",
              "--runs-dir", str(tmp_path / "runs")])
    assert stop.value.code == 2
    assert f"--init-from: {tmp_path}/simclr-s0 holds no run" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # nothing was trained
