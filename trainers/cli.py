"""What every command-line entry point shares: one-line errors instead of tracebacks."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, PermissionError)


def run(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> int:
    """Runs `main`; a user error exits 2 with `error: <reason>` (MIXEM_DEBUG=1 re-raises)."""
    from mixem_tf.data import DatasetUnavailableError

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
