"""Peak resident memory of a process, sampled on a background thread while a block runs."""

from __future__ import annotations

import os
import threading


class Background:
    """Calls `tick` every `period` seconds on a thread while used as a context manager."""

    period = 0.01

    def __init__(self):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(self.period):
            self.tick()

    def tick(self):
        raise NotImplementedError

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


class PeakRSS(Background):
    """The peak RSS in bytes of process `pid` (default: this one), sampled every 10 ms while in
    use; `mib` is the same in MiB."""

    def __init__(self, pid: int | None = None):
        import psutil

        super().__init__()
        self.process = psutil.Process(pid or os.getpid())
        self.peak = self.process.memory_info().rss

    def tick(self):
        self.peak = max(self.peak, self.process.memory_info().rss)

    @property
    def mib(self) -> float:
        return self.peak / 2**20
