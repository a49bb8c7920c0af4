"""SimCLR-style image augmentation in ``keras.ops``: batched, seeded, compilable.

Reproduces the view pipelines of ``../shared/METHODS.md``:

* MIX'EM and method 3 (METHODS §1.3, §3.3): crop → flip → colour jitter (p) → grayscale (p)
  → blur (p) → normalise  (``order="mixem"``);
* MiCE (METHODS §2.3): crop → grayscale (p) → colour jitter (always) → flip → normalise
  (``order="mice"``).

Every op follows torchvision's semantics (METHODS §5.6) and is vectorised over the batch: no
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

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Optional, Sequence, Tuple, Union

import keras
import numpy as np
from keras import ops

from mixem_tf.distributed import replica_info

__all__ = [
    "AugmentConfig",
    "Augmenter",
    "preset",
    "preprocess",
    "sample_crop_boxes",
    "resized_crop",
    "resize",
    "resample_matrix",
    "separable_resample",
    "rgb_luma",
    "random_resized_crop",
    "random_flip",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_saturation",
    "adjust_hue",
    "color_jitter",
    "apply_color_jitter",
    "to_grayscale",
    "random_grayscale",
    "gaussian_kernel",
    "gaussian_blur",
    "random_gaussian_blur",
    "normalize",
    "METHODS",
    "DATASETS",
]

#: Luma weights of ITU-R 601-2, as in PIL ``convert("L")`` and torchvision.
LUMA = (0.299, 0.587, 0.114)
#: Probability of a horizontal flip when ``AugmentConfig.flip`` is on (torchvision default).
FLIP_PROB = 0.5
#: Tries of torchvision's RandomResizedCrop before it falls back to a centre crop.
CROP_ATTEMPTS = 10
ORDERS = ("mixem", "mice")
# Uniform draws per image that each random op consumes (see the ``_*_from_uniform`` cores).
_CROP_DRAWS = 2 * CROP_ATTEMPTS + 2   # area and log-ratio per try, top, left
_JITTER_DRAWS = 9                     # 4 factors, 4 order keys, 1 apply
_BLUR_DRAWS = 2                       # sigma, apply

SeedLike = Union[int, None, "keras.random.SeedGenerator"]


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


def _pair(value, name, cast=float):
    try:
        items = tuple(cast(v) for v in value)
    except TypeError:
        raise ValueError(f"{name} must be a pair of numbers, got {value!r}") from None
    if len(items) != 2:
        raise ValueError(f"{name} must be a pair of numbers, got {value!r}")
    return items


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Settings of one augmented-view pipeline (METHODS §1.3, §2.3, §3.3, §5.6).

    Defaults are MIX'EM's (SimCLR with s = 1) except ``size``, which has no default. Use
    :func:`preset` for the settings of a method on a dataset.

    Attributes:
        size: output ``(height, width)``; an int means a square.
        crop_scale: RandomResizedCrop area fraction range, ``0 < lo <= hi <= 1``.
        crop_ratio: RandomResizedCrop aspect-ratio (width / height) range, ``0 < lo <= hi``.
        flip: horizontal flip with p = 0.5 (off for digits).
        brightness, contrast, saturation: ColorJitter strengths ``>= 0``; the factor is drawn
            from ``U[max(0, 1 - s), 1 + s]``. 0 switches the op off.
        hue: ColorJitter hue strength in ``[0, 0.5]``; the shift is drawn from ``U[-hue, hue]``.
        jitter_prob: probability that the whole ColorJitter is applied (RandomApply).
        gray_prob: RandomGrayscale probability.
        blur_prob: Gaussian blur probability (``order="mixem"`` only; must be 0 for "mice").
        blur_sigma: blur sigma range, drawn uniformly per image, ``0 < lo <= hi``.
        blur_kernel: odd kernel size in pixels; ``None`` means ``int(0.1 * height)`` bumped to
            odd (MIX'EM: 9 px at 96, 3 px at 32). A kernel below 3 disables the blur.
        mean, std: normalisation in ``[0, 1]`` units, one value or one per output channel.
        order: ``"mixem"`` (crop → flip → jitter(p) → gray → blur; also method 3) or
            ``"mice"`` (crop → gray → jitter(p) → flip).
        output_channels: ``None`` keeps the input's channels; ``3`` replicates grey input to
            RGB, ``1`` converts RGB input to luma. Done first, before any other op.

    Raises:
        ValueError: on any out-of-range or inconsistent field.

    Example:
        >>> cfg = AugmentConfig(size=32, jitter_prob=1.0, blur_prob=0.0)
        >>> cfg.size
        (32, 32)
    """

    size: Tuple[int, int]
    crop_scale: Tuple[float, float] = (0.08, 1.0)
    crop_ratio: Tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
    flip: bool = True
    brightness: float = 0.8
    contrast: float = 0.8
    saturation: float = 0.8
    hue: float = 0.2
    jitter_prob: float = 0.8
    gray_prob: float = 0.2
    blur_prob: float = 0.5
    blur_sigma: Tuple[float, float] = (0.1, 2.0)
    blur_kernel: Optional[int] = None
    mean: Tuple[float, ...] = (0.0,)
    std: Tuple[float, ...] = (1.0,)
    order: str = "mixem"
    output_channels: Optional[int] = None

    def __post_init__(self):
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        size = self.size
        if _is_int(size):
            size = (size, size)
        size = _pair(size, "size", cast=lambda v: v)
        if not all(_is_int(s) and s > 0 for s in size):
            raise ValueError(f"size must be positive ints (height, width), got {self.size!r}")
        set_("size", tuple(int(s) for s in size))

        lo, hi = _pair(self.crop_scale, "crop_scale")
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(f"crop_scale must satisfy 0 < lo <= hi <= 1, got {(lo, hi)}")
        set_("crop_scale", (lo, hi))
        lo, hi = _pair(self.crop_ratio, "crop_ratio")
        if not 0.0 < lo <= hi:
            raise ValueError(f"crop_ratio must satisfy 0 < lo <= hi, got {(lo, hi)}")
        set_("crop_ratio", (lo, hi))
        if not isinstance(self.flip, bool):
            raise ValueError(f"flip must be a bool, got {self.flip!r}")

        for name in ("brightness", "contrast", "saturation"):
            value = float(getattr(self, name))
            if not (value >= 0.0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
            set_(name, value)
        hue = float(self.hue)
        if not 0.0 <= hue <= 0.5:
            raise ValueError(f"hue must be in [0, 0.5] (a fraction of the hue circle), got {hue}")
        set_("hue", hue)
        for name in ("jitter_prob", "gray_prob", "blur_prob"):
            value = float(getattr(self, name))
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {value}")
            set_(name, value)

        lo, hi = _pair(self.blur_sigma, "blur_sigma")
        if not 0.0 < lo <= hi:
            raise ValueError(f"blur_sigma must satisfy 0 < lo <= hi, got {(lo, hi)}")
        set_("blur_sigma", (lo, hi))
        if self.blur_kernel is not None:
            k = self.blur_kernel
            if not _is_int(k) or k < 1 or k % 2 == 0:
                raise ValueError(f"blur_kernel must be None or an odd int >= 1, got {k!r}")
            set_("blur_kernel", int(k))
        if self.blur_enabled and self.blur_kernel_size // 2 >= min(size):
            raise ValueError(
                f"blur kernel {self.blur_kernel_size} is too large for size {size}: its radius "
                "must be smaller than both sides")

        mean = tuple(float(m) for m in _as_sequence(self.mean, "mean"))
        std = tuple(float(s) for s in _as_sequence(self.std, "std"))
        if len(mean) not in (1, 3) or len(std) != len(mean):
            raise ValueError(
                f"mean and std must both have 1 or 3 values, got mean={mean}, std={std}")
        if not all(s > 0.0 and math.isfinite(s) for s in std):
            raise ValueError(f"std values must be finite and > 0, got {std}")
        set_("mean", mean)
        set_("std", std)

        if self.order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}, got {self.order!r}")
        if self.order == "mice" and self.blur_prob > 0.0:
            raise ValueError('order="mice" has no blur (METHODS §2.3); set blur_prob=0')
        if self.output_channels not in (None, 1, 3):
            raise ValueError(f"output_channels must be None, 1 or 3, got {self.output_channels!r}")
        if self.output_channels is not None and len(mean) not in (1, self.output_channels):
            raise ValueError(
                f"mean/std have {len(mean)} values but output_channels={self.output_channels}")

    @property
    def blur_kernel_size(self) -> int:
        """The kernel actually used: ``blur_kernel`` or ``int(0.1 * height)`` bumped to odd."""
        if self.blur_kernel is not None:
            return self.blur_kernel
        k = int(0.1 * self.size[0])
        return k + 1 if k % 2 == 0 else k

    @property
    def blur_enabled(self) -> bool:
        """Whether the blur runs at all (probability > 0 and a kernel of at least 3 px)."""
        return self.blur_prob > 0.0 and self.blur_kernel_size >= 3

    def to_dict(self) -> dict:
        """JSON-ready dict (tuples as lists); inverse of :meth:`from_dict`."""
        return {k: (list(v) if isinstance(v, tuple) else v)
                for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> "AugmentConfig":
        """Rebuild a config from :meth:`to_dict` output; unknown keys raise ValueError."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown AugmentConfig keys: {unknown}")
        return cls(**data)


def _is_int(value):
    """Python or NumPy integer, not bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _as_sequence(value, name):
    if isinstance(value, (int, float)):
        return (value,)
    try:
        return tuple(value)
    except TypeError:
        raise ValueError(
            f"{name} must be a number or a sequence of numbers, got {value!r}") from None


# --------------------------------------------------------------------------------------------
# Presets
# --------------------------------------------------------------------------------------------

METHODS = ("mixem", "simclr", "mice", "anchor")
DATASETS = ("stl10", "cifar10", "cifar100_20", "mnist", "fashion_mnist", "digits", "folder:PATH")

# name: (native size, channels)
_NATIVE = {
    "stl10": (96, 3),
    "cifar10": (32, 3),
    "cifar100_20": (32, 3),
    "mnist": (28, 1),
    "fashion_mnist": (28, 1),
    "digits": (8, 1),
}
_IDENTITY = ((0.0,), (1.0,))
# MIX'EM dataset_wrapper.py (METHODS §1.3). Its CIFAR-10 std is the widely copied
# (0.2023, 0.1994, 0.2010), kept here for fidelity.
_MIXEM_NORM = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100_20": ((0.507, 0.487, 0.441), (0.267, 0.256, 0.276)),
}
# MiCE util.py (METHODS §2.3). The grey datasets are not in MiCE; they get their own
# statistics so that MiCE's "normalise by dataset statistics" still holds (not from METHODS):
# MNIST and Fashion-MNIST the usual train-set values, digits computed on sklearn's 1797 images.
_MICE_NORM = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100_20": ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
    "stl10": ((0.4409, 0.4279, 0.3868), (0.2683, 0.2610, 0.2687)),
    "mnist": ((0.1307,), (0.3081,)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "digits": ((0.3053,), (0.3760,)),
}
#: Milder crop for 8x8 digits: at scale 0.08 a crop keeps about 5 pixels of a digit.
DIGITS_CROP_SCALE = (0.5, 1.0)


def preset(method: str, dataset: str, image_size=None) -> AugmentConfig:
    """Augmentation settings of ``method`` on ``dataset``.

    Sources (``../shared/METHODS.md``):

    * ``"mixem"`` / ``"simclr"`` — MIX'EM ``dataset_wrapper.py`` (§1.3): scale (0.08, 1), flip,
      ColorJitter(0.8, 0.8, 0.8, 0.2) with p 0.8, grayscale p 0.2, blur p 0.5 with
      σ ~ U(0.1, 2) and a kernel of 10 % of the size; CIFAR-10 / CIFAR-100 mean and std,
      identity for STL-10 and every other dataset. SimCLR is MIX'EM's pipeline.
    * ``"mice"`` — MiCE ``train_MiCE.py`` / ``util.py`` (§2.3): scale (0.2, 1), grayscale p 0.2,
      ColorJitter(0.4, 0.4, 0.4, 0.4) always, flip, no blur; MiCE's per-dataset mean and std
      (grey datasets: their own statistics, not from METHODS).
    * ``"anchor"`` (method 3) — ``transform_sic.py`` (§3.3): scale (0.08, 1), flip,
      ColorJitter(0.4, 0.4, 0.4, 0.1) with p 0.8 (s = 0.5, its CIFAR-10 setting, used for every
      dataset here), grayscale p 0.2, no blur (the original blurs only ImageNet-10/dogs), no
      normalisation. Native size by default; pass ``image_size=224`` for the paper's
      upsampling.

    Datasets: ``stl10`` (96 px), ``cifar10`` and ``cifar100_20`` (32 px), ``mnist`` and
    ``fashion_mnist`` (28 px, grey), ``digits`` (8 px, grey) and ``folder:PATH`` (identity
    normalisation; ``image_size`` required). On grey datasets saturation, hue and grayscale
    are switched off (they do nothing to one channel). ``mnist`` and ``digits`` never flip;
    ``digits`` uses the milder crop scale :data:`DIGITS_CROP_SCALE` (not from METHODS). The
    blur kernel follows the output size (28 px → 3, 8 px → below 3, so no blur).

    Args:
        method: one of :data:`METHODS`.
        dataset: one of :data:`DATASETS`.
        image_size: output size (int or ``(h, w)``); ``None`` means the dataset's native size.

    Raises:
        ValueError: unknown method or dataset, or ``folder:`` without ``image_size``.

    Example:
        >>> preset("mice", "cifar10").crop_scale
        (0.2, 1.0)
    """
    if method not in METHODS:
        raise ValueError(f"unknown augmentation method {method!r}; valid: {list(METHODS)}")
    if isinstance(dataset, str) and dataset.startswith("folder:"):
        key, native, channels = "folder", None, None
    elif dataset in _NATIVE:
        key = dataset
        native, channels = _NATIVE[dataset]
    else:
        raise ValueError(f"unknown dataset {dataset!r}; valid: {list(DATASETS)}")
    if image_size is None:
        if native is None:
            raise ValueError(
                f"preset({method!r}, {dataset!r}) needs image_size: pass the size the folder "
                "images are loaded at, e.g. image_size=64")
        image_size = native
    grey = channels == 1

    if method in ("mixem", "simclr"):
        mean, std = _MIXEM_NORM.get(key, _IDENTITY)
        kwargs = dict(crop_scale=(0.08, 1.0), brightness=0.8, contrast=0.8, saturation=0.8,
                      hue=0.2, jitter_prob=0.8, gray_prob=0.2, blur_prob=0.5, order="mixem")
    elif method == "mice":
        mean, std = _MICE_NORM.get(key, _IDENTITY)
        kwargs = dict(crop_scale=(0.2, 1.0), brightness=0.4, contrast=0.4, saturation=0.4,
                      hue=0.4, jitter_prob=1.0, gray_prob=0.2, blur_prob=0.0, order="mice")
    else:  # anchor (method 3)
        mean, std = _IDENTITY
        kwargs = dict(crop_scale=(0.08, 1.0), brightness=0.4, contrast=0.4, saturation=0.4,
                      hue=0.1, jitter_prob=0.8, gray_prob=0.2, blur_prob=0.0, order="mixem")
    if grey:
        kwargs.update(saturation=0.0, hue=0.0, gray_prob=0.0)
    if key in ("mnist", "digits"):
        kwargs["flip"] = False
    if key == "digits":
        kwargs["crop_scale"] = DIGITS_CROP_SCALE
    return AugmentConfig(size=image_size, mean=mean, std=std, **kwargs)


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def _uniform(shape, seed):
    return keras.random.uniform(shape, 0.0, 1.0, dtype="float32", seed=seed)


def _static_hwc(images, name="images"):
    shape = tuple(images.shape)
    if len(shape) != 4:
        raise ValueError(f"{name} must be a batch [N, H, W, C], got shape {shape}")
    h, w, c = shape[1:]
    if h is None or w is None or c is None:
        raise ValueError(f"{name} needs static H, W and C, got shape {shape}")
    return int(h), int(w), int(c)


def _per_image(value, rank=4):
    """A scalar stays a scalar; a ``[N]`` tensor is reshaped to broadcast over an image."""
    value = ops.cast(ops.convert_to_tensor(value), "float32")
    if len(value.shape) == 0:
        return value
    return ops.reshape(value, (-1,) + (1,) * (rank - 1))


def _to_unit_float(images):
    images = ops.convert_to_tensor(images)
    return ops.cast(images, "float32") / 255.0


def _convert_channels(x, output_channels):
    c = _static_hwc(x)[2]
    if c not in (1, 3):
        raise ValueError(f"images must have 1 (grey) or 3 (RGB) channels, got {c}")
    if output_channels is None or output_channels == c:
        return x
    if output_channels == 3:
        return ops.repeat(x, 3, axis=-1)
    return rgb_luma(x)


def rgb_luma(x):
    """``[N, H, W, 1]`` luma of an RGB batch; a grey batch is returned as is."""
    if x.shape[-1] == 1:
        return x
    # Channel slices, not a reduction over the 3-wide minor axis: XLA on CPU runs that
    # reduction about 20 times slower.
    return LUMA[0] * x[..., 0:1] + LUMA[1] * x[..., 1:2] + LUMA[2] * x[..., 2:3]


def _mean_luma(x):
    """``[N, 1, 1, 1]`` mean of the grayscale image, as the luma of the channel means."""
    return rgb_luma(ops.mean(x, axis=(1, 2), keepdims=True))


# --------------------------------------------------------------------------------------------
# RandomResizedCrop and flip
# --------------------------------------------------------------------------------------------


def _crop_boxes_from_uniform(u, height, width, scale, ratio):
    """torchvision ``RandomResizedCrop.get_params`` for a batch, from uniforms ``[N, 2T+2]``."""
    t = CROP_ATTEMPTS
    area = float(height * width)
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    target_area = area * (scale[0] + (scale[1] - scale[0]) * u[:, :t])
    aspect = ops.exp(log_lo + (log_hi - log_lo) * u[:, t:2 * t])
    # round half to even in every backend, as Python's round() in torchvision.
    crop_w = ops.round(ops.sqrt(target_area * aspect))
    crop_h = ops.round(ops.sqrt(target_area / aspect))
    ok = (crop_w > 0) & (crop_w <= width) & (crop_h > 0) & (crop_h <= height)
    first = ops.argmax(ops.cast(ok, "int32"), axis=1)[:, None]
    found = ops.any(ok, axis=1)
    crop_w = ops.take_along_axis(crop_w, first, axis=1)[:, 0]
    crop_h = ops.take_along_axis(crop_h, first, axis=1)[:, 0]
    # randint(0, H - h + 1): uniform integer in [0, H - h].
    top = ops.minimum(ops.floor(u[:, 2 * t] * (height - crop_h + 1)), height - crop_h)
    left = ops.minimum(ops.floor(u[:, 2 * t + 1] * (width - crop_w + 1)), width - crop_w)

    # Fallback: a centre crop clamped to the ratio range (static, since H and W are).
    in_ratio = width / height
    if in_ratio < min(ratio):
        fb_w, fb_h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        fb_h, fb_w = height, int(round(height * max(ratio)))
    else:
        fb_w, fb_h = width, height
    fb_top, fb_left = (height - fb_h) // 2, (width - fb_w) // 2
    boxes = ops.stack([
        ops.where(found, top, float(fb_top)),
        ops.where(found, left, float(fb_left)),
        ops.where(found, crop_h, float(fb_h)),
        ops.where(found, crop_w, float(fb_w)),
    ], axis=1)
    return ops.cast(boxes, "float32")


def sample_crop_boxes(batch_size, height: int, width: int, scale=(0.08, 1.0),
                      ratio=(3.0 / 4.0, 4.0 / 3.0), seed: SeedLike = None):
    """Crop boxes ``[N, 4]`` = (top, left, height, width) in whole pixels, float32.

    torchvision ``RandomResizedCrop.get_params`` per image (METHODS §5.6): area fraction
    ~ U(scale), log aspect ratio ~ U(log ratio), ``w = round(sqrt(area * r))``,
    ``h = round(sqrt(area / r))``, the first of 10 tries that fits wins; if none fits, a centre
    crop of the whole image clamped to the ratio range.
    """
    u = _uniform((batch_size, _CROP_DRAWS), seed)
    return _crop_boxes_from_uniform(u, int(height), int(width), scale, ratio)


def resample_matrix(start, length, out_size, in_size, flip=None):
    """Per-image ``[N, out, in]`` weights that crop ``[start, start + length)`` and resize it.

    PIL's ``BILINEAR`` resize of the cropped image (torchvision crops, then resizes): output
    pixel ``o`` is centred at ``start + (o + 0.5) * scale`` (``scale = length / out``); input
    pixel ``p`` weighs ``max(0, 1 - |p + 0.5 - centre| / max(scale, 1))``; pixels outside the
    crop are dropped and the weights renormalised. Upsampling is ordinary half-pixel bilinear
    with edges clamped to the crop; downsampling is antialiased.
    """
    scale = length / float(out_size)                                   # [N]
    support = ops.maximum(scale, 1.0)
    o = ops.arange(out_size, dtype="float32")[None, :]                   # [1, out]
    if flip is not None:
        o = ops.where(flip[:, None], float(out_size - 1) - o, o)        # [N, out]
    centre = start[:, None] + (o + 0.5) * scale[:, None]                # [N, out]
    p = ops.arange(in_size, dtype="float32")[None, None, :]             # [1, 1, in]
    dist = (p + 0.5 - centre[:, :, None]) / support[:, None, None]
    weight = ops.relu(1.0 - ops.abs(dist))
    inside = (p >= start[:, None, None]) & (p < (start + length)[:, None, None])
    weight = ops.where(inside, weight, 0.0)
    return weight / ops.sum(weight, axis=-1, keepdims=True)


def resized_crop(images, boxes, size, flip=None):
    """Crop ``boxes`` out of ``images`` and resize to ``size`` (bilinear), optionally flipped.

    torchvision ``F.resized_crop`` on PIL images followed by ``hflip`` where ``flip`` is true
    (METHODS §5.6). One separable resampling per image, as two batched matrix products.

    Args:
        images: float ``[N, H, W, C]``.
        boxes: ``[N, 4]`` (top, left, height, width) in pixels, inside the image.
        size: output ``(h, w)`` or an int.
        flip: ``None`` or bool ``[N]``: mirror the output horizontally.
    """
    out_h, out_w = (size, size) if isinstance(size, int) else tuple(size)
    height, width, _ = _static_hwc(images)
    boxes = ops.cast(ops.convert_to_tensor(boxes), "float32")
    if flip is not None:
        flip = ops.cast(ops.convert_to_tensor(flip), "bool")
    rows = resample_matrix(boxes[:, 0], boxes[:, 2], out_h, height)            # [N, h, H]
    cols = resample_matrix(boxes[:, 1], boxes[:, 3], out_w, width, flip)      # [N, w, W]
    return separable_resample(images, rows, cols)


def separable_resample(images, rows, cols):
    """``out[n] = rows[n] @ images[n] @ cols[n]ᵀ`` per channel: a separable linear filter.

    Channels move next to the batch so both products are plain batched matmuls (faster than
    the equivalent einsums on TensorFlow and JAX, CPU).
    """
    x = ops.transpose(ops.cast(images, "float32"), (0, 3, 1, 2))          # [N, C, H, W]
    x = ops.matmul(rows[:, None], x)                                       # [N, C, h, W]
    x = ops.matmul(x, ops.transpose(cols, (0, 2, 1))[:, None])            # [N, C, h, w]
    return ops.transpose(x, (0, 2, 3, 1))


def resize(images, size):
    """Resize the whole image to ``size`` with PIL's bilinear filter (antialiased when
    shrinking); returns ``images`` unchanged when the size already matches."""
    out_h, out_w = (size, size) if isinstance(size, int) else tuple(size)
    height, width, _ = _static_hwc(images)
    if (out_h, out_w) == (height, width):
        return images
    n = ops.shape(images)[0]
    box = ops.convert_to_tensor([0.0, 0.0, float(height), float(width)])
    boxes = ops.zeros((n, 4), "float32") + box[None, :]
    return resized_crop(images, boxes, (out_h, out_w))


def random_resized_crop(images, size, scale=(0.08, 1.0), ratio=(3.0 / 4.0, 4.0 / 3.0),
                        flip_prob: float = 0.0, seed: SeedLike = None):
    """torchvision ``RandomResizedCrop(size, scale, ratio)`` then ``RandomHorizontalFlip(p)``,
    vectorised: :func:`sample_crop_boxes` + :func:`resized_crop` (METHODS §1.3, §2.3, §5.6)."""
    u = _uniform((ops.shape(images)[0], _CROP_DRAWS + 1), seed)
    return _random_resized_crop_from_uniform(images, u, size, scale, ratio, flip_prob)


def _random_resized_crop_from_uniform(images, u, size, scale, ratio, flip_prob):
    height, width, _ = _static_hwc(images)
    boxes = _crop_boxes_from_uniform(u[:, :_CROP_DRAWS], height, width, scale, ratio)
    flip = u[:, _CROP_DRAWS] < flip_prob if flip_prob > 0.0 else None
    return resized_crop(images, boxes, size, flip)


def random_flip(images, prob: float = FLIP_PROB, seed: SeedLike = None):
    """torchvision ``RandomHorizontalFlip(p)``: mirror each image with probability ``prob``."""
    n = ops.shape(images)[0]
    flip = _uniform((n,), seed) < prob
    return ops.where(flip[:, None, None, None], ops.flip(images, axis=2), images)


# --------------------------------------------------------------------------------------------
# Colour
# --------------------------------------------------------------------------------------------


def _blend(x, ref, factor):
    """torchvision ``_blend``: ``clamp(factor * x + (1 - factor) * ref, 0, 1)``."""
    return ops.clip(factor * x + (1.0 - factor) * ref, 0.0, 1.0)


def adjust_brightness(images, factor):
    """torchvision ``adjust_brightness``: multiply by ``factor`` (scalar or ``[N]``), clamp."""
    return ops.clip(images * _per_image(factor), 0.0, 1.0)


def adjust_contrast(images, factor):
    """torchvision ``adjust_contrast``: blend with the mean of the image's grayscale (one
    scalar per image, over all pixels), clamp. Works on grey and RGB batches."""
    return _blend(images, _mean_luma(images), _per_image(factor))


def adjust_saturation(images, factor):
    """torchvision ``adjust_saturation``: blend with the grayscale image, clamp. Identity on
    grey (1-channel) images, as in torchvision."""
    if images.shape[-1] == 1:
        return images
    return _blend(images, rgb_luma(images), _per_image(factor))


def _frac(t):
    """``t mod 1`` as ``t - floor(t)``: XLA on CPU runs float ``mod`` (fmod) about 5x slower."""
    return t - ops.floor(t)


def _rgb_to_hsv(x):
    """``[N, H, W, 3]`` RGB → h, s, v each ``[N, H, W, 1]`` (colorsys / torchvision rules)."""
    r, g, b = x[..., 0:1], x[..., 1:2], x[..., 2:3]
    maxc = ops.maximum(ops.maximum(r, g), b)
    delta = maxc - ops.minimum(ops.minimum(r, g), b)
    s = delta / ops.where(maxc > 0.0, maxc, 1.0)
    c = (maxc - x) / ops.where(delta > 0.0, delta, 1.0)      # rc, gc, bc
    rc, gc, bc = c[..., 0:1], c[..., 1:2], c[..., 2:3]
    h = ops.where(r == maxc, bc - gc, ops.where(g == maxc, 2.0 + rc - bc, 4.0 + gc - rc))
    h = ops.where(delta > 0.0, _frac(h / 6.0), 0.0)
    return h, s, maxc


# Branch-free sector formula of HSV → RGB: channel value v - v s clip(min(k, 4 - k), 0, 1)
# with k = (n + 6 h) mod 6 and n = 5, 3, 1 for R, G, B.
_HSV_N = (5.0, 3.0, 1.0)


def _hsv_to_rgb(h, s, v):
    k = 6.0 * _frac(ops.convert_to_tensor(_HSV_N, dtype=h.dtype) / 6.0 + h)   # (n + 6h) mod 6
    return v - v * s * ops.clip(ops.minimum(k, 4.0 - k), 0.0, 1.0)


def adjust_hue(images, factor):
    """torchvision ``adjust_hue``: RGB → HSV, ``h ← (h + factor) mod 1``, HSV → RGB.

    ``factor`` (scalar or ``[N]``) is a fraction of the hue circle in ``[-0.5, 0.5]``.
    Identity on grey (1-channel) images, as in torchvision.
    """
    if images.shape[-1] == 1:
        return images
    h, s, v = _rgb_to_hsv(images)
    h = _frac(h + _per_image(factor))
    return _hsv_to_rgb(h, s, v)


def _factor_range(strength):
    return max(0.0, 1.0 - strength), 1.0 + strength


def color_jitter(images, brightness: float = 0.0, contrast: float = 0.0,
                 saturation: float = 0.0, hue: float = 0.0, prob: float = 1.0,
                 seed: SeedLike = None):
    """``RandomApply([ColorJitter(brightness, contrast, saturation, hue)], p=prob)``.

    torchvision semantics (METHODS §5.6): per image, factors ~ U[max(0, 1-s), 1+s] (hue shift
    ~ U[-hue, hue]), the four ops in a uniformly random order (the ranking of four uniform
    keys), each followed by a clamp; an op with strength 0 is skipped. Saturation and hue do
    nothing to grey images. See :func:`apply_color_jitter` for how the order is vectorised.
    """
    strengths = (brightness, contrast, saturation)
    for name, value in zip(("brightness", "contrast", "saturation"), strengths):
        if not value >= 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    if not 0.0 <= hue <= 0.5:
        raise ValueError(f"hue must be in [0, 0.5], got {hue}")
    if not any(s > 0.0 for s in strengths + (hue,)) or prob <= 0.0:
        return images
    u = _uniform((ops.shape(images)[0], _JITTER_DRAWS), seed)
    return _color_jitter_from_uniform(images, u, strengths, hue, prob)


def _color_jitter_from_uniform(images, u, strengths, hue, prob):
    use = tuple(s > 0.0 for s in strengths) + (hue > 0.0,)
    if not any(use) or prob <= 0.0:
        return images
    factors = []
    for k, strength in enumerate(strengths):
        lo, hi = _factor_range(strength)
        factors.append(lo + (hi - lo) * u[:, k])
    factors.append(-hue + 2.0 * hue * u[:, 3])
    x = _jitter_in_key_order(images, ops.stack(factors, axis=1), u[:, 4:8], use)
    if prob >= 1.0:
        return x
    return ops.where((u[:, 8] < prob)[:, None, None, None], x, images)


def apply_color_jitter(images, factors, order, use=(True, True, True, True)):
    """Deterministic ColorJitter: per image, the ops in ``order`` with the given factors.

    Args:
        images: float ``[N, H, W, C]`` in ``[0, 1]``.
        factors: ``[N, 4]``: brightness, contrast, saturation factors and the hue shift.
        order: int ``[N, 4]``, a permutation of ``0..3`` per image (0 brightness, 1 contrast,
            2 saturation, 3 hue): ``order[n, t]`` is the op applied at step ``t``.
        use: static flags; an op whose flag is false is skipped (torchvision's ``None``).

    Vectorised: brightness, contrast and saturation are all "blend with a reference" (0, the
    grayscale mean, the grayscale image; torchvision ``_blend``), so each step is one blend
    whose reference and factor are selected per image. Hue costs most, so it runs once: the
    blends ranked before it run first (the others with factor 1, an exact identity), then
    hue, then the blends ranked after it.
    """
    order = ops.cast(ops.convert_to_tensor(order), "int32")
    keys = ops.cast(ops.argsort(order, axis=1), "float32")  # step at which each op runs
    factors = ops.cast(ops.convert_to_tensor(factors), "float32")
    return _jitter_in_key_order(images, factors, keys, tuple(bool(v) for v in use))


def _jitter_in_key_order(images, factors, keys, use):
    grey = _static_hwc(images)[2] == 1
    blend_ops = [k for k in range(3) if use[k] and not (grey and k == 2)]
    use_hue = use[3] and not grey
    if not blend_ops and not use_hue:
        return images
    x = images
    if blend_ops:
        cols = ops.convert_to_tensor(blend_ops, dtype="int32")
        op_keys = ops.take(keys, cols, axis=1)                    # [N, m]
        rank = ops.argsort(op_keys, axis=1)                       # slot t -> column
        slot_op = ops.take(cols, rank)                            # [N, m] op code per slot
        slot_key = ops.take_along_axis(op_keys, rank, axis=1)
        slot_factor = ops.take_along_axis(factors, slot_op, axis=1)

    def blend_steps(x, active):
        # Step t: clip(f x + (1 - f) ref) with ref = 0, mean luma or luma, written as
        # clip(f x + w_mean mean + w_luma luma); f = 1 (and both weights 0) where inactive.
        f = ops.where(active, slot_factor, 1.0)                              # [N, m]
        w_mean = (1.0 - f) * ops.cast(slot_op == 1, "float32")
        w_luma = (1.0 - f) * ops.cast(slot_op == 2, "float32")
        coef = ops.reshape(ops.stack([f, w_mean, w_luma], axis=1),
                           (-1, 1, 1, 1, 3, len(blend_ops)))
        for t in range(len(blend_ops)):
            c = coef[..., t]
            ref = c[..., 1] * _mean_luma(x) + c[..., 2] * rgb_luma(x)      # one channel
            x = ops.clip(c[..., 0] * x + ref, 0.0, 1.0)
        return x

    if use_hue:
        hue_key = keys[:, 3:4]
        if blend_ops:
            x = blend_steps(x, slot_key < hue_key)
        x = adjust_hue(x, factors[:, 3])
        if blend_ops:
            x = blend_steps(x, slot_key > hue_key)
    else:
        x = blend_steps(x, ops.ones_like(slot_key) > 0.0)
    return x


def to_grayscale(images, num_output_channels: Optional[int] = None):
    """torchvision ``rgb_to_grayscale``: luma 0.299 R + 0.587 G + 0.114 B, replicated to
    ``num_output_channels`` (default: the input's channel count). Grey input is unchanged."""
    c = num_output_channels or images.shape[-1]
    luma = rgb_luma(images)
    return luma if c == 1 else ops.repeat(luma, c, axis=-1)


def random_grayscale(images, prob: float = 0.2, seed: SeedLike = None):
    """torchvision ``RandomGrayscale(p)``: each image becomes grayscale (same channel count)
    with probability ``prob``. A no-op on grey images."""
    if images.shape[-1] == 1 or prob <= 0.0:
        return images
    return _random_grayscale_from_uniform(images, _uniform((ops.shape(images)[0],), seed), prob)


def _random_grayscale_from_uniform(images, u, prob):
    if images.shape[-1] == 1 or prob <= 0.0:
        return images
    return ops.where((u < prob)[:, None, None, None], to_grayscale(images), images)


# --------------------------------------------------------------------------------------------
# Blur and normalisation
# --------------------------------------------------------------------------------------------


def gaussian_kernel(sigma, kernel_size: int):
    """OpenCV ``getGaussianKernel(kernel_size, sigma)`` per image: ``[N, k]`` (or ``[k]`` for a
    scalar sigma), weights ``exp(-x² / 2σ²)`` at ``x = -(k-1)/2 … (k-1)/2``, summing to 1."""
    sigma = ops.cast(ops.convert_to_tensor(sigma), "float32")
    x = ops.arange(kernel_size, dtype="float32") - (kernel_size - 1) / 2.0
    s = sigma[..., None]
    w = ops.exp(-(x * x) / (2.0 * s * s))
    return w / ops.sum(w, axis=-1, keepdims=True)


def gaussian_blur(images, sigma, kernel_size: int):
    """Gaussian blur with a fixed odd ``kernel_size`` and per-image ``sigma`` (scalar or
    ``[N]``), like MIX'EM's ``cv2.GaussianBlur(img, (k, k), sigma)`` (METHODS §1.3).

    Border: ``reflect`` (``d c b | a b c d | c b a``, edge pixel not repeated), which is
    OpenCV's default ``BORDER_REFLECT_101``. The kernel radius must be smaller than H and W.
    Separable, with the border folded into per-image banded ``[H, H]`` and ``[W, W]`` filter
    matrices, applied like a resize (two batched matrix products): on TensorFlow without XLA
    this runs about twice as fast as ``k`` shifted copies per pass, and as fast under XLA.
    """
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be an odd int >= 1, got {kernel_size}")
    if kernel_size == 1:
        return images
    height, width, _ = _static_hwc(images)
    r = kernel_size // 2
    if r >= height or r >= width:
        raise ValueError(
            f"blur kernel {kernel_size} too large for {height}x{width} images (radius must be "
            "smaller than both sides)")
    n = ops.shape(images)[0]
    sigma = ops.cast(ops.convert_to_tensor(sigma), "float32")
    if len(sigma.shape) == 0:
        sigma = ops.zeros((n,), "float32") + sigma
    w = gaussian_kernel(sigma, kernel_size)                     # [N, k]
    rows = ops.einsum("nk,kyz->nyz", w, _reflect_taps(height, kernel_size))
    cols = rows if width == height else ops.einsum("nk,kyz->nyz", w,
                                                   _reflect_taps(width, kernel_size))
    return separable_resample(images, rows, cols)


def _reflect_taps(size, kernel_size):
    """Static ``[k, size, size]``: tap ``i`` of output ``y`` reads ``reflect(y + i - k//2)``."""
    r = kernel_size // 2
    src = np.abs(np.arange(size)[None, :] + np.arange(kernel_size)[:, None] - r)
    src = np.where(src > size - 1, 2 * (size - 1) - src, src)   # reflect-101; r < size
    taps = np.zeros((kernel_size, size, size), np.float32)
    taps[np.arange(kernel_size)[:, None], np.arange(size)[None, :], src] = 1.0
    return ops.convert_to_tensor(taps)


def random_gaussian_blur(images, prob: float = 0.5, sigma=(0.1, 2.0),
                         kernel_size: int = 3, seed: SeedLike = None):
    """MIX'EM ``GaussianBlur``: with probability ``prob`` blur with σ ~ U(sigma) (per image)."""
    if prob <= 0.0 or kernel_size < 3:
        return images
    u = _uniform((ops.shape(images)[0], _BLUR_DRAWS), seed)
    return _random_gaussian_blur_from_uniform(images, u, prob, sigma, kernel_size)


def _random_gaussian_blur_from_uniform(images, u, prob, sigma, kernel_size):
    if prob <= 0.0 or kernel_size < 3:
        return images
    blurred = gaussian_blur(images, sigma[0] + (sigma[1] - sigma[0]) * u[:, 0], kernel_size)
    if prob >= 1.0:
        return blurred
    return ops.where((u[:, 1] < prob)[:, None, None, None], blurred, images)


def normalize(images, mean, std):
    """torchvision ``Normalize``: ``(x - mean) / std`` per channel; one value applies to all
    channels, otherwise one value per channel."""
    mean, std = tuple(_as_sequence(mean, "mean")), tuple(_as_sequence(std, "std"))
    c = images.shape[-1]
    if len(mean) not in (1, c) or len(std) not in (1, c):
        raise ValueError(
            f"mean/std have {len(mean)}/{len(std)} values but the images have {c} channels")
    mean = ops.convert_to_tensor(mean, dtype="float32")
    std = ops.convert_to_tensor(std, dtype="float32")
    return (images - mean) / std


# --------------------------------------------------------------------------------------------
# Pipelines
# --------------------------------------------------------------------------------------------


def _check_config(config):
    if not isinstance(config, AugmentConfig):
        raise ValueError(f"config must be an AugmentConfig, got {type(config).__name__}")


def _prepare(images, config):
    """uint8 (or float in [0, 255]) → float32 in [0, 1] with the config's output channels."""
    x = _convert_channels(_to_unit_float(images), config.output_channels)
    c = x.shape[-1]
    if len(config.mean) not in (1, c):
        raise ValueError(
            f"the config normalises {len(config.mean)} channels but the batch has {c} "
            f"(input shape {tuple(images.shape)}); use a preset for this dataset or set "
            "output_channels")
    return x


def preprocess(images, config: AugmentConfig):
    """Evaluation path: the same channel conversion, resize and normalisation as the views,
    no randomness (METHODS §1.6: evaluation must use the training normalisation).

    Args:
        images: uint8 ``[N, H, W, C]`` (``C`` 1 or 3), or float holding values in ``[0, 255]``.
        config: the :class:`AugmentConfig` used for training.

    Returns:
        float32 ``[N, h, w, C_out]``; resized (PIL bilinear, antialiased) only if the size
        differs from ``config.size``.
    """
    _check_config(config)
    x = resize(_prepare(images, config), config.size)
    return normalize(x, config.mean, config.std)


@keras.saving.register_keras_serializable("mixem_tf")
class Augmenter(keras.layers.Layer):
    """Draws one augmented view per call (METHODS §1.3 / §2.3 / §3.3, torchvision semantics).

    Args:
        config: an :class:`AugmentConfig`, e.g. from :func:`preset`.
        seed: int or ``None``; one seed gives the same sequence of views.

    The layer owns a ``keras.random.SeedGenerator`` whose state advances on every call (also
    inside ``model.predict`` / a jitted step). It always augments, also with
    ``training=False``; use :func:`preprocess` for clean images.

    Input: uint8 ``[N, H, W, C]`` (or float in ``[0, 255]``), ``C`` 1 or 3, static H, W, C.
    Output: float32 ``[N, h, w, C_out]``, normalised.

    Example:
        >>> augmenter = Augmenter(preset("mixem", "cifar10"), seed=0)
        >>> view_a, view_b = augmenter(batch), augmenter(batch)
    """

    def __init__(self, config: AugmentConfig, seed: Optional[int] = None, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if isinstance(config, dict):
            config = AugmentConfig.from_dict(config)
        _check_config(config)
        if seed is not None and not _is_int(seed):
            raise ValueError(f"seed must be an int or None, got {seed!r}")
        seed = None if seed is None else int(seed)
        self.config = config
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.built = True

    def call(self, images):
        cfg = self.config
        x = _prepare(images, cfg)
        # One uniform draw per view, sliced between the ops: fewer PRNG kernels to run (and,
        # under eager JAX, to compile) than one draw per op.
        widths = (_CROP_DRAWS + 1, _JITTER_DRAWS, 1, _BLUR_DRAWS)
        u = self._draw(ops.shape(x)[0], sum(widths))
        ends = [sum(widths[:i + 1]) for i in range(len(widths))]
        u_crop, u_jitter = u[:, :ends[0]], u[:, ends[0]:ends[1]]
        u_gray, u_blur = u[:, ends[1]], u[:, ends[2]:ends[3]]

        flip_prob = FLIP_PROB if cfg.flip else 0.0
        x = _random_resized_crop_from_uniform(x, u_crop, cfg.size, cfg.crop_scale,
                                              cfg.crop_ratio, flip_prob)
        strengths = (cfg.brightness, cfg.contrast, cfg.saturation)
        if cfg.order == "mixem":
            x = _color_jitter_from_uniform(x, u_jitter, strengths, cfg.hue, cfg.jitter_prob)
            x = _random_grayscale_from_uniform(x, u_gray, cfg.gray_prob)
            if cfg.blur_enabled:
                x = _random_gaussian_blur_from_uniform(x, u_blur, cfg.blur_prob,
                                                       cfg.blur_sigma, cfg.blur_kernel_size)
        else:  # mice: the flip is already folded into the crop (it commutes with the rest)
            x = _random_grayscale_from_uniform(x, u_gray, cfg.gray_prob)
            x = _color_jitter_from_uniform(x, u_jitter, strengths, cfg.hue, cfg.jitter_prob)
        return normalize(x, cfg.mean, cfg.std)

    def _draw(self, batch, width):
        """Uniforms [batch, width]. Under tf.distribute every replica shares the seed state,
        so it draws for all replicas and keeps its own slice: views differ across replicas."""
        replica, replicas = replica_info()
        if replicas == 1:
            return _uniform((batch, width), self.seed_generator)
        every = _uniform((batch * replicas, width), self.seed_generator)
        return ops.take(ops.reshape(every, (replicas, -1, width)), replica, axis=0)

    def compute_output_shape(self, input_shape):
        channels = self.config.output_channels or input_shape[-1]
        return (input_shape[0],) + tuple(self.config.size) + (channels,)

    def get_config(self):
        base = super().get_config()
        base.update({"config": self.config.to_dict(), "seed": self.seed})
        return base

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        aug = AugmentConfig.from_dict(config.pop("config"))
        return cls(aug, **config)
