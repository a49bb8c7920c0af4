"""Files replaced atomically: a reader (or a crash) sees the old file or the new one, never
half of one. Run directories write every file they keep through here.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

import numpy as np

__all__ = ["replace_atomic", "write_json_atomic", "write_npz_atomic"]


def write_json_atomic(path, payload) -> None:
    """Writes JSON so that readers see the old file or the new one, never half of one."""
    path = Path(path)
    replace_atomic(path, lambda handle: handle.write(json.dumps(payload, indent=2).encode()))


def write_npz_atomic(path, arrays: dict) -> None:
    """Writes an uncompressed `.npz` so that readers see the old file or the new one."""
    replace_atomic(Path(path), lambda handle: np.savez(handle, **arrays))


def replace_atomic(path: Path, write) -> None:
    """Calls `write(handle)` on a new file beside `path`, then moves it onto `path`.

    The temporary file is opened with mode 0o666, so the umask applies as it does to `open`
    (`tempfile.mkstemp` would make it 0600); O_EXCL refuses to reuse an existing name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
    descriptor = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
