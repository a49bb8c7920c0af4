"""What every command-line entry point shares: quiet native logs and one-line errors.

Each entry-point package (`trainers`, `export`, `serving`) calls `quiet_native_logs()` in its
`__init__`, so it takes effect before anything imports TensorFlow: `python -m PACKAGE.MODULE`
runs the package's `__init__` first.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.abc
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

__all__ = ["USER_ERRORS", "ArgumentParser", "native_stderr_filtered", "quiet_native_logs", "read_json_object",
           "run"]

USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, PermissionError)

#: An absl log line (`I0000 00:00:1796290620.469710    7523 cudart_stub.cc:31] ...`) and its
#: severity; absl writes them to stderr before `absl::InitializeLog()` whatever the level.
_ABSL_LINE = re.compile(r"^([IWEF])\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ \S+:\d+\] ")
_ABSL_PREAMBLE = "WARNING: All log messages before absl::InitializeLog() is called"
_SEVERITIES = "IWEF"
#: Logged as errors, but only say that the machine has no usable GPU: shown as INFO.
_NO_GPU = ("failed call to cuInit",)


def _shown(line: str, min_level: int) -> bool:
    """Whether a native stderr line passes TF_CPP_MIN_LOG_LEVEL (0 INFO .. 3 FATAL only)."""
    if line.startswith(_ABSL_PREAMBLE):
        return False
    match = _ABSL_LINE.match(line)
    if match is None:
        return True
    severity = 0 if any(text in line for text in _NO_GPU) else _SEVERITIES.index(match.group(1))
    return severity >= min_level


@contextlib.contextmanager
def native_stderr_filtered():
    """Holds what native code writes to file descriptor 2 and, on exit, writes back every line
    but absl's start-up preamble and log lines below TF_CPP_MIN_LOG_LEVEL (TensorFlow 2.21 logs
    through absl before it is initialised, which ignores that level)."""
    try:
        min_level = int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0"))
    except ValueError:
        min_level = 0
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            text = held.read().decode("utf-8", "replace")
            kept = [line for line in text.splitlines(keepends=True) if _shown(line, min_level)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


class _FilteredImport(importlib.abc.MetaPathFinder):
    """Imports `tensorflow` (once) inside `native_stderr_filtered`, and lists its devices
    there: that is when it looks for a GPU and logs what it did not find."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        from importlib.util import find_spec

        spec = find_spec(name)
        if spec is not None and spec.loader is not None:
            execute = spec.loader.exec_module

            def exec_module(module):
                with native_stderr_filtered():
                    execute(module)
                    module.config.list_physical_devices()

            spec.loader.exec_module = exec_module
        return spec


def quiet_native_logs() -> None:
    """Hides TensorFlow's C++ INFO and WARNING lines (unless TF_CPP_MIN_LOG_LEVEL is set),
    including those absl prints while TensorFlow loads, and lets scikit-learn's OpenMP threads
    sleep instead of spinning while they wait: K-means read-outs run up to 30x faster on a
    machine busy with anything else. Takes effect for libraries loaded after the call."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if "tensorflow" not in sys.modules and not any(
            isinstance(finder, _FilteredImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _FilteredImport())


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors read like every other: one `error:` line, exit 2 (no usage)."""

    def error(self, message):
        self.exit(2, f"error: {message} ({self.prog} --help lists the flags)\n")


def read_json_object(path, flag: str, what: str = "a JSON object") -> dict:
    """The JSON object in the file `path` given with `flag`; FileNotFoundError / ValueError
    naming the flag and the problem otherwise."""
    import json
    from pathlib import Path

    path = Path(path)
    try:
        values = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{flag} {path} does not exist") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{flag} {path} is not valid JSON ({error})") from None
    if not isinstance(values, dict):
        raise ValueError(f"{flag} {path} must hold {what}")
    return values


#: The project's source folders: a warning raised from code in them is one of ours.
_PROJECT = Path(__file__).resolve().parent.parent
_SOURCES = tuple(str(_PROJECT / name) + os.sep for name in ("mixem_tf", "trainers", "export",
                                                             "serving", "bench"))
_python_show_warning = warnings.showwarning


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """The project's own warnings as `warning: <message>` lines, like its other messages;
    every other library's as Python shows them."""
    if category.__module__.split(".")[0] == "mixem_tf" or str(filename).startswith(_SOURCES):
        print(f"warning: {message}", file=file or sys.stderr)
    else:
        _python_show_warning(message, category, filename, lineno, file, line)


def run(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> int:
    """Runs `main`; a user error exits 2 with `error: <reason>`, a run the disk cannot hold
    exits 1 with `error: <what is kept>` (MIXEM_DEBUG=1 re-raises both), a stop signal exits
    128 + its number with the line saying where the run stopped; the project's own warnings
    print as `warning: <message>`."""
    from mixem_tf.data import DatasetUnavailableError
    from mixem_tf.interrupts import TrainingStopped
    from mixem_tf.run_failures import RunWriteError

    quiet_native_logs()
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return int(main(argv) or 0)
    except (*USER_ERRORS, DatasetUnavailableError, RunWriteError) as error:
        if os.environ.get("MIXEM_DEBUG"):
            raise
        print(f"error: {error}", file=sys.stderr)
        return 1 if isinstance(error, RunWriteError) else 2
    except TrainingStopped as stop:
        print(stop, file=sys.stderr)
        return stop.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
