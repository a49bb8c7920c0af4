"""Feeds uint8 batches straight from memory to the training step (both backends).

One generator runs through every remaining epoch in order; epoch e's sample order is a function
of (seed, e) alone, so a run resumed at epoch e sees exactly the batches an uninterrupted run
would. `fit` gets it with `steps_per_epoch`, so Keras never resets it between epochs. A batch is
one fancy-indexing copy (no per-image Python work), made ahead of time in a background thread;
augmentation happens later, on the accelerator, inside the training step.
"""

from __future__ import annotations

import queue
import threading

import numpy as np

__all__ = ["EpochBatches", "epoch_permutation"]


def epoch_permutation(num_samples: int, seed: int, epoch: int) -> np.ndarray:
    """The sample order of one epoch: a function of (seed, epoch) only."""
    return np.random.default_rng([seed, epoch]).permutation(num_samples)


class EpochBatches:
    """uint8 batches of `images` for epochs [start_epoch, end_epoch), incomplete batch dropped.

    Args:
        images: uint8 [N, H, W, C].
        batch_size: images per batch (for a tf.distribute strategy: per worker).
        seed: shuffling seed.
        start_epoch, end_epoch: the epochs to feed (resume starts later).
        shard: (index, count): feed only batches index, index + count, ... of each epoch
            (multi-worker training, each worker a different share of the same order).
        prefetch: batches prepared ahead in a background thread (0: none).
        make_batch: `make_batch(indices, rng)` → the batch of those sample indices (a
            method's `training_batch`); None: `images[indices]`. `rng` is seeded by
            (seed, epoch, step).
    """

    def __init__(self, images, batch_size: int, *, seed: int = 0, start_epoch: int = 0,
                 end_epoch: int = 1, shard: tuple[int, int] = (0, 1), prefetch: int = 4,
                 make_batch=None):
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
        self.make_batch = make_batch

    @property
    def steps_per_epoch(self) -> int:
        return (len(self.images) // self.batch_size) // self.shard_count

    def epoch(self, epoch: int):
        """The batches of one epoch, in order."""
        order = epoch_permutation(len(self.images), self.seed, epoch)
        for step in range(self.steps_per_epoch):
            batch = step * self.shard_count + self.shard_index
            indices = order[batch * self.batch_size:(batch + 1) * self.batch_size]
            if self.make_batch is None:
                yield self.images[indices]
            else:
                yield self.make_batch(indices, np.random.default_rng([self.seed, epoch, batch]))

    def _batches(self):
        for epoch in range(self.start_epoch, self.end_epoch):
            yield from self.epoch(epoch)

    def __iter__(self):
        if self.prefetch <= 0:
            return self._batches()
        return _prefetched(self._batches(), self.prefetch)


_DONE = object()


def _prefetched(iterator, depth: int):
    """Runs `iterator` in a daemon thread, `depth` items ahead of the consumer."""
    buffer: queue.Queue = queue.Queue(maxsize=depth)

    def produce():
        try:
            for item in iterator:
                buffer.put(item)
        except BaseException as error:  # surfaced in the consumer
            buffer.put(error)
        buffer.put(_DONE)

    threading.Thread(target=produce, daemon=True).start()
    while (item := buffer.get()) is not _DONE:
        if isinstance(item, BaseException):
            raise item
        yield item
