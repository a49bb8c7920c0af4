"""Training callbacks: NaN guard, atomic per-epoch checkpoints, throughput, component alarms."""

from __future__ import annotations

import math
import time

import keras

from mixem_tf import checkpoints

__all__ = ["EpochCheckpoint", "NonFiniteLossError", "StopOnNonFiniteLoss", "Throughput"]


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops training at the first NaN or infinite batch loss and remembers where."""

    def __init__(self):
        super().__init__()
        self.failure: str | None = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.failure = f"the loss became {float(loss)} at epoch {self._epoch + 1}, step {batch + 1}"
            self.model.stop_training = True


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves model and optimiser atomically after every completed, finite epoch.

    Args:
        directory: the run's checkpoint folder.
        guard: the `StopOnNonFiniteLoss` whose failure vetoes saving.
        enabled: False on non-chief workers of a multi-worker run.
    """

    def __init__(self, directory, guard: StopOnNonFiniteLoss | None = None, enabled=True):
        super().__init__()
        self.directory = directory
        self.guard = guard
        self.enabled = enabled

    def on_epoch_end(self, epoch, logs=None):
        if not self.enabled or (self.guard is not None and self.guard.failure):
            return
        if not all(math.isfinite(float(v)) for v in (logs or {}).values()):
            return
        checkpoints.save(self.directory, epoch + 1, self.model, self.model.optimizer,
                         extra={"logs": {k: float(v) for k, v in (logs or {}).items()}})


class Throughput(keras.callbacks.Callback):
    """Measures training images/s per epoch (first epoch's first step, which compiles, excluded).

    An "image" is one source image, i.e. one pair of views for two-view methods.
    """

    def __init__(self, batch_size: int):
        super().__init__()
        self.batch_size = batch_size
        self.per_epoch: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start, self._steps = None, 0

    def on_train_batch_end(self, batch, logs=None):
        if self._start is None:
            self._start = time.perf_counter()
        else:
            self._steps += 1

    def on_epoch_end(self, epoch, logs=None):
        if self._start is not None and self._steps:
            rate = self._steps * self.batch_size / (time.perf_counter() - self._start)
            self.per_epoch.append(rate)
            if logs is not None:
                logs["images_per_s"] = rate
