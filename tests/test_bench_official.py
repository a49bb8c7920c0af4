"""bench.official_mixem without PyTorch: the summary worked by hand, and its refusals of a
wrong --official or --torch-python before anything is timed."""

import importlib.util
import sys

import pytest

from tests.cli_helpers import call_entry_point

pytestmark = pytest.mark.core


def _row(backend, batch, pairs, round_=1):
    return {"round": round_, "backend": backend, "batch": batch, "pairs_per_s": pairs,
            "first_step_s": 10.0 + round_, "peak_rss_mib": 1000.0, "parameters": 7}


def test_summary_takes_medians_over_rounds_and_divides_by_the_official_median():
    from bench.official_mixem import summary_rows

    rows = [_row("tensorflow", 64, p, r) for r, p in enumerate([30.0, 36.0, 33.0], 1)]
    rows += [_row("pytorch", 64, p, r) for r, p in enumerate([12.0, 10.0, 15.0], 1)]
    rows += [_row("jax", 64, 24.0), _row("tensorflow", 128, 40.0)]  # no official batch 128
    summary = {(row["backend"], row["batch"]): row for row in summary_rows(rows)}
    tf = summary["tensorflow", 64]
    assert (tf["rounds"], tf["pairs_per_s"], tf["pairs_per_s_min"], tf["pairs_per_s_max"]) == (
        3, 33.0, 30.0, 36.0)
    assert tf["first_step_s"] == 12.0  # the median of 11, 12, 13
    assert tf["ours_over_official"] == pytest.approx(33.0 / 12.0)
    assert summary["jax", 64]["ours_over_official"] == pytest.approx(2.0)
    assert summary["pytorch", 64]["ours_over_official"] is None
    assert summary["tensorflow", 128]["ours_over_official"] is None
    assert [key[1] for key in summary] == [64, 64, 64, 128]  # by batch first


@pytest.fixture()
def nothing_timed(monkeypatch):
    """Fails the test if either side's step would run."""
    import bench.official_mixem as bench

    def refuse(*args, **kwargs):
        raise AssertionError("a side ran before the settings were checked")

    monkeypatch.setattr(bench, "ours_row", refuse)
    monkeypatch.setattr(bench, "official_run", refuse)
    return bench


def _fake_official(tmp_path):
    for name in ("train.py", "resnet.py", "nt_xent.py", "data_aug/dataset_wrapper.py",
                 "config.yaml"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("")
    return tmp_path


def test_a_folder_that_is_not_the_official_repository_is_refused(nothing_timed, tmp_path,
                                                                  capsys):
    (tmp_path / "train.py").write_text("")
    code, out, err = call_entry_point(nothing_timed.main, capsys, "--official", tmp_path,
                                      "--torch-python", sys.executable)
    assert code == 2 and out == ""
    assert err == (f"error: --official {tmp_path} is not the MIX'EM repository (no resnet.py, "
                   "nt_xent.py, data_aug/dataset_wrapper.py, config.yaml); git clone "
                   "https://github.com/alivaramesh/MIXEM\n")


def test_a_python_without_torch_is_refused(nothing_timed, tmp_path, capsys):
    if importlib.util.find_spec("torch") is not None:
        pytest.skip("this Python has torch")
    code, out, err = call_entry_point(nothing_timed.main, capsys, "--official",
                                      _fake_official(tmp_path), "--torch-python", sys.executable)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith(f"error: --torch-python {sys.executable} cannot import the official "
                          "code (ModuleNotFoundError: No module named 'torch'); ")


def test_a_missing_torch_python_is_refused(nothing_timed, tmp_path, capsys):
    code, _, err = call_entry_point(nothing_timed.main, capsys, "--official",
                                    _fake_official(tmp_path), "--torch-python",
                                    tmp_path / "no-python")
    assert (code, err) == (2, f"error: --torch-python {tmp_path / 'no-python'} is not an "
                              "executable\n")
