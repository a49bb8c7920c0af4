"""Training callbacks: method hooks, NaN guard, stop signals, atomic per-epoch checkpoints,
throughput, history, cluster-size alarms, the time estimate and one line per epoch.

A callback that appends one record per epoch to a file of the run has `forget_epochs_after(
epoch)`: a resumed run calls it with the epoch it restored, so the records of epochs it trains
again (after falling back past a corrupt checkpoint, or after a kill between the checkpoint and
the next epoch's record) are not kept twice.

A message a callback prints while Keras' progress bar is drawn (`verbose=1`) starts on a line
of its own (`message_prefix`); without the bar (a log file, `EpochLines`) it needs none."""

from __future__ import annotations

import csv
import math
import time
from pathlib import Path

import keras

from mixem_tf import checkpoints
from mixem_tf.atomic import write_bytes_atomic

__all__ = [
    "ClusterSizeMonitor",
    "EpochCheckpoint",
    "EpochLines",
    "EpochTimeEstimate",
    "MethodHooks",
    "HistoryCSV",
    "NonFiniteLossError",
    "StopOnNonFiniteLoss",
    "StopOnSignal",
    "Throughput",
]


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class MethodHooks(keras.callbacks.Callback):
    """Calls the method's epoch hooks (`on_train_epoch_begin`, `on_train_epoch_end`).

    On JAX the model state is re-read at each epoch's start and written back before its end's
    callbacks, so what the hooks assign reaches the compiled step.
    """

    def on_epoch_begin(self, epoch, logs=None):
        self.model.on_train_epoch_begin(epoch)

    def on_epoch_end(self, epoch, logs=None):
        self.model.on_train_epoch_end(epoch, logs if logs is not None else {})


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


class StopOnSignal(keras.callbacks.Callback):
    """Raises `TrainingStopped` at the first step end, or epoch end, after a stop signal
    (`mixem_tf.interrupts`). Raising, rather than `stop_training`, keeps Keras from ending the
    interrupted epoch: its partial logs would be checkpointed and recorded as a whole epoch.
    Goes last, so an epoch's checkpoint and records are written before it raises.

    Args:
        signals: the command's `StopSignals`.
    """

    def __init__(self, signals):
        super().__init__()
        self.signals = signals

    def on_train_batch_end(self, batch, logs=None):
        self.signals.check()

    def on_epoch_end(self, epoch, logs=None):
        self.signals.check()


def _forget_epochs_after(path: Path, epoch: int, epoch_of) -> None:
    """Rewrites the text file `path` (atomically) without the lines whose `epoch_of(line)` is
    later than `epoch`, and without a line cut short by a kill (no newline, or unreadable);
    `epoch_of` returns None for a line to keep whatever the epoch (a header)."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = []
    for line in lines:
        try:
            number = epoch_of(line) if line.endswith("\n") else epoch + 1
        except (ValueError, KeyError, TypeError, IndexError):
            continue
        if number is None or number <= epoch:
            kept.append(line)
    if kept != lines:
        write_bytes_atomic(path, "".join(kept).encode())


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves model and optimiser atomically after every completed, finite epoch.

    Args:
        directory: the run's checkpoint folder.
        guard: the `StopOnNonFiniteLoss` whose failure vetoes saving.
    """

    def __init__(self, directory, guard: StopOnNonFiniteLoss | None = None):
        super().__init__()
        self.directory = directory
        self.guard = guard

    def on_epoch_end(self, epoch, logs=None):
        if self.guard is not None and self.guard.failure:
            return
        if not all(math.isfinite(float(v)) for v in (logs or {}).values()):
            return
        checkpoints.save(self.directory, epoch + 1, self.model, self.model.optimizer,
                         extra={"logs": {k: float(v) for k, v in (logs or {}).items()}})


def message_prefix(callback) -> str:
    """"\n" while Keras draws its progress bar (the bar's line is not finished), else ""."""
    return "\n" if (callback.params or {}).get("verbose") == 1 else ""


class EpochLines(keras.callbacks.Callback):
    """One line per epoch on stdout, for output that is not a terminal (a log file, CI):
    `epoch 3/15: 12 s, loss 4.1234, nt_xent 3.9876, ...` with every log of the epoch (the
    callbacks before it add theirs), in place of Keras' per-step progress bars."""

    def __init__(self, clock=time.monotonic):
        super().__init__()
        self.clock = clock
        self._start = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = self.clock()

    def on_epoch_end(self, epoch, logs=None):
        import sys

        values = ", ".join(f"{k} {float(v):.5g}" for k, v in (logs or {}).items())
        took = format_duration(self.clock() - self._start)
        print(f"epoch {epoch + 1}/{(self.params or {}).get('epochs', '?')}: {took}"
              + (f", {values}" if values else ""), file=sys.stdout, flush=True)


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


class HistoryCSV(keras.callbacks.Callback):
    """Appends one row per epoch (epoch number from 1, then every log) to a CSV file.

    Unlike Keras' CSVLogger it writes no empty validation columns, and a resumed run appends
    to the same file under the same header.
    """

    def __init__(self, path):
        super().__init__()
        self.path = Path(path)

    def forget_epochs_after(self, epoch: int) -> None:
        """Drops the rows of epochs after `epoch` (and a row cut short)."""
        def epoch_of(line):
            return None if line.startswith("epoch,") else int(next(csv.reader([line]))[0])

        _forget_epochs_after(self.path, epoch, epoch_of)

    def on_epoch_end(self, epoch, logs=None):
        logs = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}}
        if self.path.exists() and self.path.stat().st_size:
            with self.path.open() as handle:
                columns = next(csv.reader(handle))
            columns += [k for k in logs if k not in columns]
        else:
            columns = list(logs)
        new_file = not self.path.exists() or not self.path.stat().st_size
        with self.path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, columns, restval="")
            if new_file:
                writer.writeheader()
            writer.writerow(logs)


class ClusterSizeMonitor(keras.callbacks.Callback):
    """Per-epoch cluster sizes of a method's own assignment (docs/METHODS.md §5.8).

    Assigns a fixed sample of training images to the argmax of the evaluation feature
    `feature` (MIX'EM's π, cdec's q) after every epoch, adds `largest_cluster` (share of the
    busiest) and `clusters_used` to the logs (so they reach the progress bar, history.csv and
    TensorBoard), appends the whole share vector to `path` (JSON lines), and warns when one
    cluster holds more than `alarm` of them for `patience` epochs in a row, or at the last
    epoch. Early epochs are no evidence: BatchNorm's moving statistics still differ from the
    batches' and the method has not spread its clusters yet, so runs with few steps per epoch
    that end healthy hold one large cluster for up to their first 8 epochs (the CPU recipe on
    a small folder; 2 on digits: docs/BENCHMARKS.md, "When a large cluster is a collapse"); the
    default patience is a third of the run (at least 2 epochs). It warns once per streak, and
    again at the last epoch if the streak lasts.

    Args:
        images: uint8 sample of the training images.
        feature: the evaluation output whose argmax is the cluster.
        path: JSON-lines file of {"epoch", "occupancy"}, or None.
        what: the word for a cluster in the warning ("component", "centre").
        advice: what the warning suggests.
        patience: epochs in a row over `alarm` before it warns; None: `PATIENCE_SHARE` of the
            run's epochs, at least 2.
    """

    PATIENCE_SHARE = 1 / 3

    def __init__(self, images, feature: str, path=None, *, what: str = "cluster",
                 advice: str = "lower the learning rate", alarm: float = 0.5,
                 patience: int | None = None):
        super().__init__()
        self.images = images
        self.feature = feature
        self.path = Path(path) if path else None
        self.what, self.advice = what, advice
        self.alarm = alarm
        self.patience = patience
        self._over = 0

    def forget_epochs_after(self, epoch: int) -> None:
        """Drops the records of epochs after `epoch` (and a record cut short)."""
        import json

        if self.path is not None:
            _forget_epochs_after(self.path, epoch, lambda line: int(json.loads(line)["epoch"]))

    def on_epoch_end(self, epoch, logs=None):
        import json
        import sys

        import numpy as np

        scores = self.model.predict(self.images, batch_size=256, verbose=0)[self.feature]
        counts = np.bincount(np.argmax(scores, axis=-1), minlength=scores.shape[-1])
        share = counts / counts.sum()
        if logs is not None:
            logs["largest_cluster"] = float(share.max())
            logs["clusters_used"] = float((counts > 0).sum())
        if self.path is not None:
            with self.path.open("a") as handle:
                handle.write(json.dumps({"epoch": epoch + 1, "occupancy": share.tolist()}) + "\n")
        self._over = self._over + 1 if share.max() > self.alarm else 0
        epochs = (self.params or {}).get("epochs")
        patience = self.patience or max(2, math.ceil((epochs or 0) * self.PATIENCE_SHARE))
        if self._over == patience or (self._over and epoch + 1 == epochs):  # once, and at the end
            print(f"{message_prefix(self)}warning: epoch {epoch + 1}: {self.what} "
                  f"{int(share.argmax())} has held over {self.alarm:.0%} of the images for "
                  f"{self._over} epoch(s) (now {share.max():.0%}); watch largest_cluster: if it "
                  f"stays above {self.alarm:.0%} to the end, the clustering has collapsed "
                  f"(then {self.advice})", file=sys.stderr)


def gpu_visible() -> bool:
    """True when the Keras backend sees a GPU (or another accelerator than the CPU)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    if backend == "jax":
        import jax

        return any(device.platform != "cpu" for device in jax.devices())
    if backend == "torch":
        import torch

        return torch.cuda.is_available()
    return False


def format_duration(seconds: float) -> str:
    """"45 s", "3 min 20 s", "2 h 5 min": as precise as an estimate deserves."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


class EpochTimeEstimate(keras.callbacks.Callback):
    """Prints once, after the first `steps` timed steps of the first epoch trained, the
    estimated time per epoch and for the epochs left (stderr), so a run that will take hours
    says so in its first minute. The first step, which compiles the step function, is not
    timed; an epoch shorter than that reports at its end from the steps it had.

    When an epoch will take longer than `slow_epoch_s` and no GPU is visible, it adds how to
    size the run for a CPU (the paper's ResNet-18 at 96 px is GPU work; `folder:` uses it).

    Args:
        steps: timed steps the estimate is made from.
        slow_epoch_s: epochs longer than this, on a machine without a GPU, get the hint.
        clock: seconds as a float (`time.monotonic`; a fake one in tests).
        gpu_visible: whether an accelerator is there (default: `gpu_visible()`).
    """

    CPU_HINT = ("no GPU is visible: for a CPU-sized run use the small ConvNet at a low "
                "resolution, e.g. --backbone convnet --image-size 32 (README, \"Your own "
                "images\")")

    def __init__(self, steps: int = 5, slow_epoch_s: float = 600.0, clock=time.monotonic,
                 gpu_visible=gpu_visible):
        super().__init__()
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        self.steps, self.slow_epoch_s = steps, slow_epoch_s
        self.clock, self.gpu_visible = clock, gpu_visible
        self.message: str | None = None  # the estimate, once printed
        self._first_epoch, self._start, self._timed, self._done = None, None, 0, False

    def on_epoch_begin(self, epoch, logs=None):
        if self._first_epoch is None:
            self._first_epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self._done:
            return
        if self._start is None:
            self._start = self.clock()  # the compiling first step ends here
            return
        self._timed += 1
        if self._timed >= self.steps:
            self._report()

    def on_epoch_end(self, epoch, logs=None):
        if not self._done and self._timed:
            self._report()
        self._done = True  # later epochs say nothing

    def _report(self):
        import sys

        self._done = True
        steps = (self.params or {}).get("steps")
        if not steps:
            return  # an epoch of unknown length: nothing to multiply by
        per_epoch = (self.clock() - self._start) / self._timed * steps
        left = self.params["epochs"] - self._first_epoch
        self.message = (f"estimated time: {format_duration(per_epoch)} per epoch, "
                        f"{format_duration(per_epoch * left)} for the {left} epoch(s) to train "
                        f"(from {self._timed} step(s) of {steps})")
        if per_epoch > self.slow_epoch_s and not self.gpu_visible():
            self.message += f"; {self.CPU_HINT}"
        print(message_prefix(self) + self.message, file=sys.stderr)
