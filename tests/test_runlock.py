"""The run folder's lock: a second writer or a reader beside a writer is refused naming the
writer; readers share; a lock left by a killed process is taken over, by exactly one of the
processes racing for it."""

import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mixem_tf.runlock import LOCK_FILE, RunLockedError, reads_run, run_lock

pytestmark = pytest.mark.core
ROOT = Path(__file__).resolve().parents[1]

HOLDER = """
import sys, time
from mixem_tf.runlock import run_lock
with run_lock(sys.argv[1], shared=sys.argv[2] == "shared"):
    print("held", flush=True)
    time.sleep(120)
"""


def _holder(run_dir, shared=False):
    """A process holding `run_dir`'s lock, once it says so."""
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir),
                                "shared" if shared else "exclusive"], cwd=ROOT,
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


def _end(process):
    process.kill()
    process.wait()


def test_a_second_writer_is_refused_with_the_holders_pid_host_and_start(tmp_path):
    holder = _holder(tmp_path / "run")
    try:
        with pytest.raises(RunLockedError) as refused:
            with run_lock(tmp_path / "run"):
                pytest.fail("two writers held the run")
        message = str(refused.value)
        assert f"pid {holder.pid} on {socket.gethostname()}" in message
        assert "since 20" in message and " UTC" in message and "\n" not in message
        with pytest.raises(RunLockedError, match=f"pid {holder.pid}"):  # readers too
            with run_lock(tmp_path / "run", shared=True):
                pytest.fail("a reader beside a writer")
    finally:
        _end(holder)


def test_readers_share_and_keep_a_writer_out(tmp_path):
    (tmp_path / "run").mkdir()
    reader = _holder(tmp_path / "run", shared=True)
    try:
        with run_lock(tmp_path / "run", shared=True):
            pass
        with pytest.raises(RunLockedError, match="being read by another command"):
            with run_lock(tmp_path / "run"):
                pytest.fail("a writer beside a reader")
    finally:
        _end(reader)
    with run_lock(tmp_path / "run"):
        pass


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path):
    holder = _holder(tmp_path / "run")
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    left = json.loads((tmp_path / "run" / LOCK_FILE).read_text())
    assert left["pid"] == holder.pid  # the dead holder's name is still in the file
    reader = _holder(tmp_path / "run", shared=True)  # a reader clears the dead writer's name
    try:
        with pytest.raises(RunLockedError, match="being read by another command"):
            with run_lock(tmp_path / "run"):
                pytest.fail("a writer beside a reader")
    finally:
        _end(reader)
    with run_lock(tmp_path / "run"):
        assert json.loads((tmp_path / "run" / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert not (tmp_path / "run" / LOCK_FILE).exists()


def _take_turns(run_dir, inside, start, turns, result):
    """Takes the lock `turns` times; inside it, creates `inside` exclusively (a second holder
    would find it there) and removes it again."""
    start.wait()
    held = refused = 0
    for _ in range(turns):
        try:
            with run_lock(run_dir):
                descriptor = os.open(inside, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                os.close(descriptor)
                time.sleep(0.001)
                os.unlink(inside)
                held += 1
        except RunLockedError:
            refused += 1
    result.put((held, refused))


def test_processes_racing_for_the_lock_never_hold_it_together(tmp_path):
    # Each release removes the lock file while others may have it open: a taker that locked the
    # removed file must notice and try again, or two processes would hold two files.
    run_dir, inside = tmp_path / "run", tmp_path / "inside"
    holder = _holder(run_dir)
    _end(holder)  # an abandoned lock to start from
    context = multiprocessing.get_context("fork")
    start, result = context.Barrier(4), context.Queue()
    workers = [context.Process(target=_take_turns, args=(run_dir, inside, start, 250, result))
               for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    counts = [result.get(timeout=5) for _ in workers]
    assert all(worker.exitcode == 0 for worker in workers), counts  # no FileExistsError
    assert sum(held for held, _ in counts) > 0 and sum(r for _, r in counts) > 0, counts


def test_a_folder_made_for_a_refused_start_is_removed_and_a_readers_missing_run_is_its_own_error(
        tmp_path):
    with pytest.raises(ValueError, match="bad setting"):
        with run_lock(tmp_path / "new" / "run"):
            raise ValueError("bad setting")
    assert not (tmp_path / "new" / "run").exists()

    @reads_run
    def read(run_dir):
        raise ValueError(f"{run_dir} holds no run")

    with pytest.raises(ValueError, match="holds no run"):
        read(tmp_path / "missing")
    assert not (tmp_path / "missing").exists()
