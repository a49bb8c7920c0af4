"""Feeds uint8 batches straight from memory to the training step (both backends).

One permutation per epoch, derived from (seed, epoch) alone, so a resumed run sees exactly the
batches an uninterrupted run would; a batch is one fancy-indexing copy, no per-image Python.
Augmentation happens later, on the accelerator, inside the training step.
"""

from __future__ import annotations

import numpy as np
import keras

__all__ = ["EpochBatches", "epoch_permutation"]


def epoch_permutation(num_samples: int, seed: int, epoch: int) -> np.ndarray:
    """The sample order of one epoch: a function of (seed, epoch) only."""
    return np.random.default_rng([seed, epoch]).permutation(num_samples)


class EpochBatches(keras.utils.PyDataset):
    """uint8 batches of `images`, reshuffled every epoch, incomplete last batch dropped.

    Args:
        images: uint8 [N, H, W, C].
        batch_size: images per batch (for a tf.distribute strategy: the global batch).
        seed: shuffling seed.
        start_epoch: the epoch the first iteration belongs to (the resumed epoch).
        shard: (index, count) to feed every count-th batch from index (multi-worker).
    """

    def __init__(self, images, batch_size: int, *, seed: int = 0, start_epoch: int = 0,
                 shard: tuple[int, int] = (0, 1)):
        super().__init__(workers=1, use_multiprocessing=False, max_queue_size=8)
        if images.dtype != np.uint8 or images.ndim != 4:
            raise ValueError(f"expected uint8 images [N, H, W, C], got {images.dtype} "
                             f"{images.shape}")
        if not 1 <= batch_size <= len(images):
            raise ValueError(f"batch size {batch_size} must be between 1 and the number of "
                             f"images ({len(images)})")
        self.images = images
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.epoch = int(start_epoch)
        self.shard_index, self.shard_count = shard
        self._order = epoch_permutation(len(images), self.seed, self.epoch)

    @property
    def num_batches(self) -> int:
        return (len(self.images) // self.batch_size) // self.shard_count

    def __len__(self) -> int:
        return self.num_batches

    def __getitem__(self, index):
        batch = index * self.shard_count + self.shard_index
        rows = self._order[batch * self.batch_size:(batch + 1) * self.batch_size]
        return self.images[rows]

    def on_epoch_begin(self):
        self._order = epoch_permutation(len(self.images), self.seed, self.epoch)

    def on_epoch_end(self):
        self.epoch += 1
