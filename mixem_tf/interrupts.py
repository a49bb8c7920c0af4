"""A scheduler's stop (SIGTERM) or Ctrl-C (SIGINT) ends training at a step boundary, saying
what is kept.

    with StopSignals() as signals:          # for the whole command
        with signals.at_step_boundaries():  # around model.fit: the StopOnSignal callback raises
            model.fit(...)

While training, a signal only sets `received`; the `StopOnSignal` callback raises
`TrainingStopped` at the end of the current step (a few seconds at most) and after an epoch's
checkpoint is written, so the interrupted epoch leaves no partial checkpoint or history row.
Outside training (loading data, read-outs) and on a second signal, `TrainingStopped` is raised
at once: every file of a run is written atomically, so nothing is torn.

The command then exits with 128 + the signal's number (143 for SIGTERM, 130 for SIGINT), the
shell's code for "ended by this signal", so a scheduler sees the stop it asked for.
"""

from __future__ import annotations

import contextlib
import signal
import threading

__all__ = ["SIGNALS", "StopSignals", "TrainingStopped"]

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class TrainingStopped(BaseException):
    """A stop signal ended the command; the message says what is kept and how to go on.

    A BaseException, as KeyboardInterrupt: it is no failure of the run, so code that records
    failures (a tune trial's `except Exception`) lets it through.

    Attributes:
        signum: the signal's number.
        exit_code: 128 + signum.
    """

    def __init__(self, signum: int, message: str | None = None):
        self.signum = signum
        self.exit_code = 128 + signum
        super().__init__(message or f"stopped by {self.signal_name}")

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name


class StopSignals:
    """Catches SIGTERM and SIGINT for its `with` block (main thread only; elsewhere a no-op)
    and puts the previous handlers back at its end."""

    def __init__(self):
        self.received: int | None = None
        self._deferring = False
        self._previous: dict = {}

    def _handle(self, signum, frame):
        if self.received is not None or not self._deferring:
            raise TrainingStopped(signum)
        self.received = signum

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
        return self

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}
        return False

    @contextlib.contextmanager
    def at_step_boundaries(self):
        """Within the block a first signal only sets `received`; `check()` raises it."""
        self._deferring = True
        try:
            yield
        finally:
            self._deferring = False
        self.check()

    def check(self) -> None:
        """Raises TrainingStopped if a signal has been received."""
        if self.received is not None:
            raise TrainingStopped(self.received)
