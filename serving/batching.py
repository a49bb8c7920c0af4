"""Server-side batching: concurrent requests that fit together run as one graph call.

As TF Serving's ``--enable_batching``: requests wait in a queue per (model version, signature,
input names, per-row shapes, dtypes) until the queue holds ``max_batch_size`` rows or the
first request has waited ``timeout_seconds``; the queue then runs as one call whose outputs are
split back, row by row, to the callers. Requests whose shapes differ run in separate calls; a
request larger than ``max_batch_size`` runs alone. If a merged call fails with an
InvalidArgumentError (one caller's corrupt image), each request is rerun on its own so only the
culprit gets the error.

    batcher = Batcher(max_batch_size=32, timeout_seconds=0.002)
    outputs = batcher.submit(loaded_version, "serving_default", {"images": x}).result()
    batcher.stop()
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np


class _Task:
    __slots__ = ("inputs", "rows", "future")

    def __init__(self, inputs: dict):
        self.inputs = inputs
        self.rows = int(next(iter(inputs.values())).shape[0])
        self.future: Future = Future()


class _Queue:
    __slots__ = ("version", "signature", "tasks", "rows", "deadline")

    def __init__(self, version, signature: str, deadline: float):
        self.version, self.signature, self.deadline = version, signature, deadline
        self.tasks: list[_Task] = []
        self.rows = 0


def batch_key(version, signature: str, inputs: dict) -> tuple:
    """Requests with equal keys can be concatenated along the first axis."""
    shapes = tuple(sorted((k, v.shape[1:], v.dtype.str) for k, v in inputs.items()))
    return id(version), signature, shapes


def run_together(version, signature: str, tasks: list[_Task]) -> None:
    """Runs `tasks` as one call of `version.run` and resolves each task's future with its rows."""
    import tensorflow as tf

    if len(tasks) == 1:
        _resolve(tasks[0], version, signature)
        return
    merged = {key: np.concatenate([t.inputs[key] for t in tasks]) for key in tasks[0].inputs}
    total = sum(t.rows for t in tasks)
    try:
        outputs = version.run(signature, merged)
    except tf.errors.InvalidArgumentError:
        outputs = None  # one request's bad data: find it by running each alone
    except Exception as error:
        for task in tasks:
            task.future.set_exception(error)
        return
    if outputs is None or any(np.ndim(v) == 0 or len(v) != total for v in outputs.values()):
        for task in tasks:  # failed, or outputs not batched by row: no merging possible
            _resolve(task, version, signature)
        return
    start = 0
    for task in tasks:
        end = start + task.rows
        task.future.set_result({key: value[start:end] for key, value in outputs.items()})
        start = end


def _resolve(task: _Task, version, signature: str) -> None:
    try:
        task.future.set_result(version.run(signature, task.inputs))
    except Exception as error:
        task.future.set_exception(error)


class Batcher:
    """Merges concurrent `submit` calls; `num_threads` batches may run at the same time."""

    def __init__(self, max_batch_size: int = 32, timeout_seconds: float = 0.002,
                 num_threads: int = 2):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if timeout_seconds < 0:
            raise ValueError(f"batch timeout must be >= 0, got {timeout_seconds}")
        if num_threads < 1:
            raise ValueError(f"num_batch_threads must be >= 1, got {num_threads}")
        self.max_batch_size, self.timeout_seconds = max_batch_size, timeout_seconds
        self._pool = ThreadPoolExecutor(num_threads, thread_name_prefix="batch")
        self._queues: dict[tuple, _Queue] = {}
        self._wake = threading.Condition()
        self._stopped = False
        self._scheduler = threading.Thread(target=self._schedule, name="batch-scheduler",
                                           daemon=True)
        self._scheduler.start()

    def submit(self, version, signature: str, inputs: dict) -> Future:
        """Queues one request ({input: array with a leading batch axis}); returns its future."""
        task = _Task(inputs)
        if task.rows >= self.max_batch_size:
            self._dispatch(version, signature, [task])
            return task.future
        key = batch_key(version, signature, inputs)
        with self._wake:
            if self._stopped:
                raise RuntimeError("the batcher is stopped")
            queue = self._queues.get(key)
            if queue is not None and queue.rows + task.rows > self.max_batch_size:
                self._dispatch_queue(self._queues.pop(key))
                queue = None
            if queue is None:
                queue = self._queues[key] = _Queue(version, signature,
                                                   time.monotonic() + self.timeout_seconds)
            queue.tasks.append(task)
            queue.rows += task.rows
            if queue.rows >= self.max_batch_size or self.timeout_seconds == 0:
                self._dispatch_queue(self._queues.pop(key))
            else:
                self._wake.notify()
        return task.future

    def flush(self) -> None:
        """Runs every waiting queue now (used at shutdown)."""
        with self._wake:
            for key in list(self._queues):
                self._dispatch_queue(self._queues.pop(key))

    def stop(self) -> None:
        """Flushes, waits for running batches, stops the threads."""
        with self._wake:
            self._stopped = True
            self._wake.notify()
        self.flush()
        self._scheduler.join()
        self._pool.shutdown(wait=True)

    def _dispatch_queue(self, queue: _Queue) -> None:
        self._dispatch(queue.version, queue.signature, queue.tasks)

    def _dispatch(self, version, signature: str, tasks: list[_Task]) -> None:
        self._pool.submit(run_together, version, signature, tasks)

    def _schedule(self) -> None:
        with self._wake:
            while not self._stopped:
                now = time.monotonic()
                for key in [k for k, q in self._queues.items() if q.deadline <= now]:
                    self._dispatch_queue(self._queues.pop(key))
                deadlines = [q.deadline for q in self._queues.values()]
                self._wake.wait(min(deadlines) - now if deadlines else None)
