"""What every command-line entry point shares: quiet native logs and one-line errors."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

__all__ = ["USER_ERRORS", "quiet_native_logs", "read_json_object", "run"]

USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, PermissionError)


def quiet_native_logs() -> None:
    """Hides TensorFlow's C++ INFO and WARNING lines (unless TF_CPP_MIN_LOG_LEVEL is set) and
    lets scikit-learn's OpenMP threads sleep instead of spinning while they wait: K-means
    read-outs run up to 30x faster on a machine busy with anything else. Takes effect for
    libraries loaded after the call."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


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


def run(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> int:
    """Runs `main`; a user error exits 2 with `error: <reason>`, a run the disk cannot hold
    exits 1 with `error: <what is kept>` (MIXEM_DEBUG=1 re-raises both), a stop signal exits
    128 + its number with the line saying where the run stopped."""
    from mixem_tf.data import DatasetUnavailableError
    from mixem_tf.interrupts import TrainingStopped
    from mixem_tf.run_failures import RunWriteError

    quiet_native_logs()
    try:
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
