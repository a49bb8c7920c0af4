"""What a run that cannot go on says, in one line: what failed or stopped it, which
checkpoints are kept, and how to continue.

- A read-only run folder is refused before any work (`check_writable`), not at the first write
  after the data is loaded and the model built.
- A disk that fills up (or turns read-only) while a run writes becomes `RunWriteError`
  (`write_failure`): every file of a run is written atomically, so the checkpoints saved before
  are intact, and the message names them.
- A stop signal (`mixem_tf.interrupts`) becomes a `TrainingStopped` naming the last checkpoint
  (`stopped`).

Entry points print either as one line (`mixem_tf.cli.run`): RunWriteError as `error: ...`, exit
code 1; TrainingStopped as is, exit code 128 + the signal's number.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import warnings
from pathlib import Path

from mixem_tf.interrupts import TrainingStopped

__all__ = ["RunWriteError", "check_writable", "is_write_failure", "stopped", "write_failure"]

_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_READ_ONLY = {errno.EROFS, errno.EACCES, errno.EPERM}
_WRITE_ERRNOS = _FULL | _READ_ONLY | {errno.EIO}
_CHECKPOINT = re.compile(r"epoch-(\d+)\.npz")


class RunWriteError(RuntimeError):
    """A file of the run could not be written; the message says what failed, what is kept and
    how to continue.

    Attributes:
        failure: what failed ("no space left on device while saving the checkpoint of ...").
        kept: what is kept and what to do first ("the checkpoints of epochs 1 and 2 are
            intact; free some space").
    """

    def __init__(self, failure: str, kept: str, resume: str | None):
        self.failure, self.kept = failure, kept
        then = f", then resume with {resume}" if resume else ", then start it again"
        super().__init__(f"{failure}; {kept}{then}")

    def resumed_by(self, command: str) -> "RunWriteError":
        """The same error, continued by `command` (e.g. the study's) instead."""
        return RunWriteError(self.failure, self.kept, command)


def _reason(error: OSError) -> str:
    text = error.strerror or str(error)
    return text[:1].lower() + text[1:]


def check_writable(folders, flag: str) -> None:
    """PermissionError (naming `flag`) unless a file can be created in every existing folder
    of `folders`. A file is created and removed, as the run will: `os.access` misses ACLs and
    servers that map root to nobody."""
    for folder in map(Path, folders):
        if not folder.is_dir():
            continue
        probe = folder / f".write-test.{secrets.token_hex(4)}"
        try:
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            probe.unlink()
        except OSError as error:
            raise PermissionError(f"{flag}: cannot write in {folder} ({_reason(error)}); "
                                  "nothing was changed: make it writable, or copy the run to a "
                                  "writable disk and resume the copy") from None


def is_write_failure(error: BaseException, out_dir) -> bool:
    """An OSError of a full disk, or of a file in `out_dir` that cannot be written (not e.g.
    a dataset file that cannot be read)."""
    if not isinstance(error, OSError) or error.errno not in _WRITE_ERRNOS:
        return False
    if error.errno in _FULL:
        return True
    return (bool(error.filename)
            and Path(out_dir).resolve() in Path(error.filename).resolve().parents)


def _latest_epoch(out_dir: Path) -> int | None:
    from mixem_tf import checkpoints

    with warnings.catch_warnings():  # a fallback was announced when the run started
        warnings.simplefilter("ignore")
        try:
            latest = checkpoints.latest_checkpoint(out_dir / "checkpoints")
        except checkpoints.CorruptCheckpointError:
            return None
    return None if latest is None else int(latest[1]["epoch"])


def _epochs(epochs) -> str:
    epochs = list(epochs)
    if len(epochs) > 2 and epochs == list(range(epochs[0], epochs[-1] + 1)):
        return f"epochs {epochs[0]}-{epochs[-1]}"
    return ("epoch " if len(epochs) == 1 else "epochs ") + " and ".join(map(str, epochs))


def write_failure(error: OSError, out_dir, resume: str) -> RunWriteError:
    """The one-line RunWriteError for `error`, raised while writing the run in `out_dir`;
    `resume` is the command that continues it."""
    from mixem_tf import checkpoints

    out_dir = Path(out_dir)
    target = Path(error.filename) if error.filename else None
    what = f"writing {target}" if target else f"writing the run {out_dir}"
    if target is not None and (match := _CHECKPOINT.fullmatch(target.name)):
        what = f"saving the checkpoint of epoch {int(match.group(1))} ({target})"
    latest = _latest_epoch(out_dir)
    fix = ("free some space" if error.errno in _FULL else
           f"make {out_dir} writable" if error.errno in _READ_ONLY else "check the disk")
    failure = f"{_reason(error)} while {what}"
    if latest is None:
        return RunWriteError(failure, f"no epoch had finished, so no checkpoint is kept; {fix}",
                             None)
    intact = [e for e in checkpoints.intact_epochs(out_dir / "checkpoints") if e <= latest]
    kept = (f"the checkpoint{'s' if len(intact) > 1 else ''} of {_epochs(intact)} "
            f"{'are' if len(intact) > 1 else 'is'} intact; {fix}")
    return RunWriteError(failure, kept, resume)


def stopped(stop: TrainingStopped, out_dir, resume: str) -> TrainingStopped:
    """`stop` with the message that says after which epoch, and how to resume."""
    latest = _latest_epoch(Path(out_dir))
    if latest is None:
        message = (f"stopped by {stop.signal_name} before the first epoch finished (no "
                   "checkpoint yet); start it again with the same command")
    else:
        message = f"stopped by {stop.signal_name} after epoch {latest}; resume with {resume}"
    return TrainingStopped(stop.signum, message)
