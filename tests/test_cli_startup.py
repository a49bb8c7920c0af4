"""Every entry point answers `--help` and a bad argument without loading a framework, and a
failing command's first line is its `error:` line; native start-up lines are filtered by level;
the project's warnings print as its other messages. (Their speed: bench.cli_startup.)"""

import json
import os
import subprocess
import sys

import pytest

from bench.cli_startup import BAD_ARGUMENTS
from mixem_tf.cli import native_stderr_filtered, run

FRAMEWORKS = ("tensorflow", "keras", "jax")

# Runs a module as `python -m` would, twice (--help, then the bad arguments), and reports the
# exit code, what it printed and which frameworks were loaded after each.
PROBE = """
import contextlib, io, json, runpy, sys

module, *bad = sys.argv[1:]
report = {}
for case, args in (("help", ["--help"]), ("error", bad)):
    printed = io.StringIO()
    sys.argv = [module, *args]
    code = 0
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
        try:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        except SystemExit as stop:
            code = stop.code
    report[case] = {"code": code, "printed": printed.getvalue(),
                    "loaded": [m for m in %r if m in sys.modules]}
print(json.dumps(report))
""" % (FRAMEWORKS,)

NO_TF_NEEDED = pytest.mark.core  # the core environment (no TensorFlow) runs these too
REASONS = {  # what each entry point's first line says about bench.cli_startup's bad arguments
    "trainers.fit": "unknown dataset",
    "trainers.tune": "invalid int value",
    "trainers.predict": "one of the arguments --model",
    "trainers.pixel_kmeans": "invalid choice",
    "trainers.recluster": "--clusters '1': expected K >= 2",
    "trainers.review": "required: --out",
    "export.savedmodel": "arguments are required: --run",
    "export.onnx": "arguments are required: --out",
    "export.keras_model": "required: --out",
    "serving.server": "--port: must be >= 0",
    "serving.client": "unrecognized arguments: --no-such-flag",
}
ENTRY_POINTS = [pytest.param(module, BAD_ARGUMENTS[module], reason,
                             marks=() if module.startswith("serving.") else NO_TF_NEEDED)
                for module, reason in REASONS.items()]


@pytest.mark.parametrize("module, bad_args, reason", ENTRY_POINTS)
def test_help_and_a_bad_argument_load_no_framework(module, bad_args, reason):
    done = subprocess.run([sys.executable, "-c", PROBE, module, *bad_args], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "MIXEM_DEBUG": ""})
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    helped, failed = report["help"], report["error"]
    assert helped["code"] == 0 and f"python -m {module}" in helped["printed"]
    assert helped["loaded"] == [] and failed["loaded"] == []
    assert failed["code"] == 2
    first, *rest = failed["printed"].splitlines()
    assert first.startswith("error: ") and reason in first, failed["printed"]
    assert rest == []


def test_fit_help_lists_every_methods_options_with_its_default():
    done = subprocess.run([sys.executable, "-m", "trainers.fit", "--help"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stderr == ""
    text = " ".join(done.stdout.split())
    assert "--queue-size QUEUE_SIZE MiCE: negative keys per expert ν (paper: 16384)" in text
    assert "(default 16384)" in text and "cdec: γ, weight of the anchor loss (default 1.0)" in text


@pytest.mark.core
def test_native_start_up_lines_below_the_level_are_held_back(capfd, monkeypatch):
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    with native_stderr_filtered():
        for line in ("WARNING: All log messages before absl::InitializeLog() is called are "
                     "written to STDERR",
                     "I0000 00:00:1796290620.469710    7523 cudart_stub.cc:31] no cuda drivers",
                     "W0000 00:00:1796290620.469710    7523 port.cc:153] oneDNN is on",
                     "E0000 00:00:1796290620.469710    7523 cuda_platform.cc:52] failed call to "
                     "cuInit: INTERNAL: CUDA error",
                     "E0000 00:00:1796290620.469710    7523 cuda_executor.cc:1] out of memory",
                     "a native line that is not a log line"):
            os.write(2, (line + "\n").encode())
    err = capfd.readouterr().err.splitlines()
    assert err == ["E0000 00:00:1796290620.469710    7523 cuda_executor.cc:1] out of memory",
                   "a native line that is not a log line"]


@pytest.mark.core
def test_the_projects_warnings_print_as_its_other_messages(capsys):
    import warnings

    from mixem_tf.data.folder import SkippedFilesWarning

    def main(argv):
        warnings.warn("2 of 5 files skipped", SkippedFilesWarning, stacklevel=2)

    assert run(main, []) == 0
    assert capsys.readouterr().err == "warning: 2 of 5 files skipped\n"  # no source line
