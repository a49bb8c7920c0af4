"""Who may use a run folder at once: one writer, or any number of readers.

    with run_lock("runs/x"):                 # training, --resume, a tune trial, a re-cluster
        ...
    with run_lock("runs/x", shared=True):    # an export reading the run's checkpoint and read-outs
        ...

    @reads_run                               # the same for a function whose first argument
    def export_run(run_dir, ...):            # is the run folder it reads

A second writer, or a reader while a writer works (an export would pair a newer checkpoint with
older read-out centroids), is refused with `RunLockedError`, whose one-line message names the
writer: command, pid, host and since when.

The lock is `fcntl.flock` on `RUN/.lock`, not a lock file created with O_EXCL and judged stale
by its pid. The kernel drops a flock when the last descriptor of its holder closes, also when
the process is killed (SIGKILL, out of memory), so a lock left by a dead process is free by
construction; and taking it is one atomic call, so of two processes that find an abandoned lock
exactly one wins. With O_EXCL both would see the dead pid, both remove the file and both create
a new one in turn, each believing it holds the lock (and a pid reused by another process would
look alive). Linux's NFS client maps flock onto the server's POSIX locks, so writers on two
hosts exclude each other too.

The file's content is only the message: the writer's pid, host, command and start time,
written once the lock is held and cleared before it is released (a name left by a killed
writer is cleared by the next holder, reader or writer). The file is removed by the
last holder (who takes it exclusively for that); a process that locked the file just as it was
removed finds that the path no longer names what it locked, and tries again.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import functools
import json
import os
import socket
import sys
import time
from pathlib import Path

__all__ = ["LOCK_FILE", "RunLockedError", "reads_run", "run_lock"]

LOCK_FILE = ".lock"
_NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


class RunLockedError(ValueError):
    """Another process writes (or reads) the run folder; the message names it."""


def _command() -> str:
    """What this process is, as its user typed it: `python -m trainers.fit`, or the script."""
    argv = getattr(sys, "orig_argv", sys.argv)
    if "-m" in argv[:-1]:
        return f"python -m {argv[argv.index('-m') + 1]}"
    return "python -c" if sys.argv[0] == "-c" else Path(sys.argv[0]).name or "python"


def _holder(path: Path) -> dict | None:
    """The writer recorded in the lock file, or None (readers hold it, or a writer has taken
    it a moment ago and not yet written its name)."""
    try:
        holder = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) and "pid" in holder else None


def _describe(run_dir: Path, path: Path) -> str:
    for _ in range(10):  # a writer writes its name right after taking the lock
        holder = _holder(path)
        if holder is not None:
            break
        time.sleep(0.05)
    if holder is None:
        return (f"{run_dir} is being read by another command (an export); try again when it "
                "has finished")
    return (f"{run_dir} is in use by {holder.get('command', 'another command')} (pid "
            f"{holder['pid']} on {holder.get('host', '?')}, since {holder.get('since', '?')}); "
            "wait for it to finish or stop it, then try again")


def _open(path: Path, shared: bool) -> int | None:
    """A descriptor of the lock file, created if need be; None when a reader may not create it
    (no such folder: the reader's own check names it; a read-only run: nothing can write it,
    so there is nothing to exclude)."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except FileNotFoundError:
        if shared:
            return None
        raise
    except OSError as error:
        if not shared or error.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
    try:
        return os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None


def _same_file(descriptor: int, path: Path) -> bool:
    try:
        on_disk = path.stat()
    except FileNotFoundError:
        return False
    held = os.fstat(descriptor)
    return (on_disk.st_dev, on_disk.st_ino) == (held.st_dev, held.st_ino)


def _acquire(run_dir: Path, shared: bool) -> int | None:
    import fcntl

    path = run_dir / LOCK_FILE
    while True:
        descriptor = _open(path, shared)
        if descriptor is None:
            return None
        try:
            fcntl.flock(descriptor, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            raise RunLockedError(_describe(run_dir, path)) from None
        except OSError as error:
            os.close(descriptor)
            if error.errno not in _NO_LOCKS:
                raise
            print(f"warning: the file system of {run_dir} refuses locks ({error.strerror}); "
                  "nothing stops a second command from using this run at the same time",
                  file=sys.stderr)
            return None
        if _same_file(descriptor, path):
            return descriptor
        os.close(descriptor)  # removed (or replaced) by its last holder meanwhile: again


def _write_holder(descriptor: int, shared: bool) -> None:
    """A writer's name into the lock file; a reader clears a name left by a killed writer
    (while it holds the lock, no writer does)."""
    with contextlib.suppress(OSError):  # a reader's read-only descriptor
        os.ftruncate(descriptor, 0)
    if not shared:
        since = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        os.pwrite(descriptor, json.dumps({
            "pid": os.getpid(), "host": socket.gethostname(), "command": _command(),
            "since": since}).encode(), 0)


def _release(descriptor: int, path: Path) -> None:
    """Clears the holder's name; the last holder removes the file."""
    import fcntl

    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # other readers still hold it
        os.ftruncate(descriptor, 0)
        if _same_file(descriptor, path):
            path.unlink()
    except OSError:
        pass  # a lock file left behind is harmless: the next holder takes it over
    finally:
        os.close(descriptor)


@contextlib.contextmanager
def run_lock(run_dir, *, shared: bool = False, create: bool = True, flag: str = ""):
    """Holds the run folder `run_dir` for the duration of the `with` block.

    Args:
        run_dir: the run folder.
        shared: a reader's lock (many at once, never beside a writer); else a writer's.
        create: create `run_dir` (and its parents) when it is missing; a folder created here
            that holds nothing else when the block ends (a refused start) is removed again.
            Without it a writer needs the folder to exist (check the run first).
        flag: the command-line flag that named `run_dir` ("--out"), for the messages.

    Raises:
        RunLockedError: another process holds it (the message names the writer).
        PermissionError: `run_dir` cannot be created, or its lock file cannot be written.
    """
    run_dir = Path(run_dir)
    named = f"{flag} {run_dir}" if flag else str(run_dir)
    created = create and not run_dir.exists()
    if create:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise PermissionError(f"{named}: cannot create it ({error.strerror})") from None
    path = run_dir / LOCK_FILE
    try:
        descriptor = _acquire(run_dir, shared)
    except OSError as error:
        raise PermissionError(f"{named}: cannot write its lock file {LOCK_FILE} "
                              f"({error.strerror})") from None
    try:
        if descriptor is not None:
            _write_holder(descriptor, shared)
        yield
    finally:
        if descriptor is not None:
            _release(descriptor, path)
        if created:
            with contextlib.suppress(OSError):
                run_dir.rmdir()  # only when empty: a start refused before writing anything


def reads_run(function):
    """Holds a reader's lock on `function`'s first argument, a run folder, for each call."""

    @functools.wraps(function)
    def reading(run_dir, *args, **kwargs):
        with run_lock(run_dir, shared=True, create=False):
            return function(run_dir, *args, **kwargs)

    return reading
