"""Feeds uint8 batches from a memory map (or an array) to the training step (both backends).

One stream runs through every remaining epoch in order; epoch e's sample order is a function
of (seed, e) alone, so a run resumed at epoch e sees exactly the batches an uninterrupted run
would. `fit` gets it with `steps_per_epoch`, so Keras never resets it between epochs. A batch is
one gather of its rows (`np.take` in memory, a read per row from a file), gathered
ahead of time by `workers` threads, or under TensorFlow by a parallel `tf.data` map
(`EpochBatches.tf_dataset`), in order either way; augmentation happens later, on the
accelerator, inside the training step. From a memory map the rows are read from its file
(`read_rows`), so the process's memory does not grow with the dataset.
"""

from __future__ import annotations

import collections
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from mixem_tf.data.cache import read_rows

__all__ = ["DEFAULT_WORKERS", "EpochBatches", "epoch_permutation"]

DEFAULT_WORKERS = 2  # gathering threads


def epoch_permutation(num_samples: int, seed: int, epoch: int) -> np.ndarray:
    """The sample order of one epoch: a function of (seed, epoch) only."""
    return np.random.default_rng([seed, epoch]).permutation(num_samples)


class EpochBatches:
    """uint8 batches of `images` for epochs [start_epoch, end_epoch), incomplete batch dropped.

    Args:
        images: uint8 [N, H, W, C], e.g. a read-only memory map of the decoded cache.
        batch_size: images per batch (for a tf.distribute strategy: per worker).
        seed: shuffling seed.
        start_epoch, end_epoch: the epochs to feed (resume starts later).
        shard: (index, count): feed only batches index, index + count, ... of each epoch
            (multi-worker training, each worker a different share of the same order).
        prefetch: batches prepared ahead (0: none, gathered on demand in the caller).
        workers: threads (or parallel tf.data calls) gathering batches.
        make_batch: `make_batch(indices, rng)` → the batch of those sample indices (a
            method's `training_batch`); None: `images[indices]`. `rng` is seeded by
            (seed, epoch, batch).
    """

    def __init__(self, images, batch_size: int, *, seed: int = 0, start_epoch: int = 0,
                 end_epoch: int = 1, shard: tuple[int, int] = (0, 1), prefetch: int = 4,
                 workers: int = DEFAULT_WORKERS, make_batch=None):
        if images.dtype != np.uint8 or images.ndim != 4:
            raise ValueError(f"expected uint8 images [N, H, W, C], got {images.dtype} "
                             f"{images.shape}")
        if not 1 <= batch_size <= len(images):
            raise ValueError(f"batch size {batch_size} must be between 1 and the number of "
                             f"images ({len(images)})")
        self.images = images
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.start_epoch, self.end_epoch = int(start_epoch), int(end_epoch)
        self.shard_index, self.shard_count = shard
        self.prefetch = int(prefetch)
        self.workers = max(1, int(workers))
        self.make_batch = make_batch
        self._orders: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()

    @property
    def steps_per_epoch(self) -> int:
        return (len(self.images) // self.batch_size) // self.shard_count

    @property
    def total_steps(self) -> int:
        return max(0, self.end_epoch - self.start_epoch) * self.steps_per_epoch

    def _order(self, epoch: int) -> np.ndarray:
        with self._lock:  # two epochs at most are in flight at once
            if epoch not in self._orders:
                self._orders = {e: o for e, o in self._orders.items() if e >= epoch - 1}
                self._orders[epoch] = epoch_permutation(len(self.images), self.seed, epoch)
            return self._orders[epoch]

    def batch(self, step: int) -> np.ndarray:
        """Batch `step` of the stream (0 = the first batch of `start_epoch`)."""
        epoch, index = divmod(int(step), self.steps_per_epoch)
        batch = index * self.shard_count + self.shard_index
        rows = self._order(self.start_epoch + epoch)[batch * self.batch_size:
                                                     (batch + 1) * self.batch_size]
        if self.make_batch is not None:
            epoch_seed = self.start_epoch + epoch
            return self.make_batch(rows, np.random.default_rng([self.seed, epoch_seed, batch]))
        return read_rows(self.images, rows)

    def epoch(self, epoch: int):
        """The batches of one epoch, in order."""
        first = (epoch - self.start_epoch) * self.steps_per_epoch
        for step in range(first, first + self.steps_per_epoch):
            yield self.batch(step)

    def __iter__(self):
        steps = range(self.total_steps)
        if self.prefetch <= 0:
            return (self.batch(step) for step in steps)
        return _gathered(self.batch, steps, self.workers, self.prefetch)

    def tf_dataset(self):
        """The same batches as a `tf.data.Dataset` of 1-tuples: a deterministic parallel map
        (`workers` calls at once) over the steps, prefetched."""
        import tensorflow as tf

        shape = self.batch(0).shape if self.make_batch else (self.batch_size,
                                                               *self.images.shape[1:])

        def gather(step):
            return tf.ensure_shape(tf.numpy_function(self.batch, [step], tf.uint8,
                                                     stateful=False), shape)

        steps = tf.data.Dataset.range(self.total_steps)
        batches = steps.map(gather, num_parallel_calls=self.workers, deterministic=True)
        return batches.map(lambda batch: (batch,)).prefetch(max(1, self.prefetch))


def _gathered(make, items, workers: int, depth: int):
    """`make(item)` for each item, in order, computed by `workers` threads up to `depth`
    items ahead of the consumer."""
    with ThreadPoolExecutor(workers, thread_name_prefix="feed") as pool:
        pending = collections.deque()
        for item in items:
            pending.append(pool.submit(make, item))
            if len(pending) >= depth:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
