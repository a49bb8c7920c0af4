"""scikit-learn's 8×8 handwritten digits (1797 images, 10 classes), shipped with sklearn.

A tiny dataset for smoke tests and CPU examples; it needs no download and no TensorFlow.
"""

from __future__ import annotations

import numpy as np

from mixem_tf.data.dataset import ImageDataset

__all__ = ["DIGITS_CLASS_NAMES", "load_digits"]

DIGITS_CLASS_NAMES = tuple(str(d) for d in range(10))


def load_digits() -> ImageDataset:
    """All 1797 digits as uint8 ``[1797, 8, 8, 1]`` with int64 labels 0..9.

    sklearn stores pixel intensities 0..16; they are scaled linearly to the uint8 range,
    ``round(v * 255 / 16)``, so 0 → 0 and 16 → 255 like every other source here.
    The dataset has a single split, ``"all"``.
    """
    from sklearn.datasets import load_digits as sklearn_load_digits

    bunch = sklearn_load_digits()
    values = np.asarray(bunch.images, dtype=np.float64)
    images = np.rint(values * (255.0 / 16.0)).astype(np.uint8)[..., None]
    return ImageDataset(
        name="digits",
        images=images,
        labels=np.asarray(bunch.target, dtype=np.int64),
        num_classes=10,
        class_names=DIGITS_CLASS_NAMES,
        split="all",
    )
