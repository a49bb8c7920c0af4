"""SimCLR-style image augmentation in ``keras.ops``: batched, seeded, compilable.

Three modules: :mod:`~mixem_tf.augment.config` (``AugmentConfig``, the settings of one view
pipeline), :mod:`~mixem_tf.augment.ops` (the image ops) and :mod:`~mixem_tf.augment.pipeline`
(``Augmenter``, ``preprocess``). Each method's settings per dataset live with the method
(``ClusteringMethod.augmentation``, ``mixem_tf.methods.augmentation``).

Reproduces the view pipelines of ``docs/METHODS.md``:

* MIX'EM and cdec (docs/METHODS.md §1.3, §3.3): crop → flip → colour jitter (p) → grayscale (p)
  → blur (p) → normalise  (``order="mixem"``);
* MiCE (docs/METHODS.md §2.3): crop → grayscale (p) → colour jitter (always) → flip → normalise
  (``order="mice"``).

Every op follows torchvision's semantics (docs/METHODS.md §5.6) and is vectorised over the batch: no
Python loop over images, no data-dependent Python control flow, and only ``keras.ops`` /
``keras.random``, so a view can be drawn inside a compiled training step under
``KERAS_BACKEND=tensorflow`` or ``jax``.

Image conventions:

* The public entry points (:class:`Augmenter`, :func:`preprocess`) take a uint8 batch
  ``[N, H, W, C]`` with ``C = 1`` (grey) or ``C = 3`` (RGB); float input is accepted too and
  must hold values in ``[0, 255]``. They return float32 ``[N, h, w, C]``, normalised.
* The individual ops take float32 ``[N, H, W, C]`` in ``[0, 1]`` (torchvision's ``ToTensor``
  range) and keep values in ``[0, 1]``; only :func:`normalize` leaves that range.
* Random ops take ``seed``: an int, ``None`` or a ``keras.random.SeedGenerator``. Each random
  op draws its randomness with exactly one ``keras.random.uniform`` call, so an int seed never
  correlates two parts of one op.

Deliberate differences from the PyTorch/PIL/OpenCV originals (all below 1/255 per pixel
except where said):

* Everything runs in float32; PIL and OpenCV round to uint8 after every op.
* Crop + resize (+ flip) is one separable resampling with PIL's bilinear filter (antialiased
  when a crop is shrunk, like PIL and torchvision ``antialias=True``), done as two batched
  matrix products per image instead of a crop followed by a resize.
* The flip is folded into the crop's resampling. Every later op is per pixel, uses a whole-
  image mean, or is a symmetric blur, so flipping first gives the same image as MiCE's
  flip-last order.
* The blur is OpenCV's ``GaussianBlur`` (fixed odd kernel, ``BORDER_REFLECT_101``) on the
  float image, also written as two batched matrix products per image.
* Those matrix products (resampling and blur) run in float32; on GPUs whose backend uses TF32
  for float32 matmuls by default, expect errors near 1e-3 (below a uint8 step).
"""


from mixem_tf.augment.config import AugmentConfig
from mixem_tf.augment.ops import (adjust_brightness, adjust_contrast, adjust_hue,
                                  adjust_saturation, apply_color_jitter, gaussian_blur,
                                  gaussian_kernel, normalize, random_flip, resample_matrix,
                                  resize, resized_crop, rgb_luma, sample_crop_boxes,
                                  separable_resample, to_grayscale)
from mixem_tf.augment.pipeline import Augmenter, preprocess

__all__ = ["AugmentConfig", "Augmenter", "adjust_brightness", "adjust_contrast", "adjust_hue",
           "adjust_saturation", "apply_color_jitter", "gaussian_blur", "gaussian_kernel",
           "normalize", "preprocess", "random_flip", "resample_matrix", "resize",
           "resized_crop", "rgb_luma", "sample_crop_boxes", "separable_resample",
           "to_grayscale"]
