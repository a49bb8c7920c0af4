"""What every command-line entry point shares: quiet native logs and one-line errors."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

__all__ = ["USER_ERRORS", "quiet_native_logs", "run"]

USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, PermissionError)


def quiet_native_logs() -> None:
    """Hides TensorFlow's C++ INFO and WARNING lines (unless TF_CPP_MIN_LOG_LEVEL is set) and
    lets scikit-learn's OpenMP threads sleep instead of spinning while they wait: K-means
    read-outs run up to 30x faster on a machine busy with anything else. Takes effect for
    libraries loaded after the call."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def run(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> int:
    """Runs `main`; a user error exits 2 with `error: <reason>` (MIXEM_DEBUG=1 re-raises)."""
    from mixem_tf.data import DatasetUnavailableError

    quiet_native_logs()
    try:
        return int(main(argv) or 0)
    except (*USER_ERRORS, DatasetUnavailableError) as error:
        if os.environ.get("MIXEM_DEBUG"):
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
