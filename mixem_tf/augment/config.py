"""`AugmentConfig`: the settings of one augmented-view pipeline, checked on creation."""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Optional, Tuple

__all__ = ["AugmentConfig", "ORDERS", "as_sequence", "is_int"]

#: Op orders: MIX'EM / SimCLR / cdec, and MiCE (docs/METHODS.md §5.6).
ORDERS = ("mixem", "mice")


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
    """Settings of one augmented-view pipeline (docs/METHODS.md §1.3, §2.3, §3.3, §5.6).

    Defaults are MIX'EM's (SimCLR with s = 1) except ``size``, which has no default. A method's
    ``augmentation(dataset, image_size)`` gives its settings on a dataset.

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
        order: ``"mixem"`` (crop → flip → jitter(p) → gray → blur; also cdec) or
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
        if is_int(size):
            size = (size, size)
        size = _pair(size, "size", cast=lambda v: v)
        if not all(is_int(s) and s > 0 for s in size):
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
            if not is_int(k) or k < 1 or k % 2 == 0:
                raise ValueError(f"blur_kernel must be None or an odd int >= 1, got {k!r}")
            set_("blur_kernel", int(k))
        if self.blur_enabled and self.blur_kernel_size // 2 >= min(size):
            raise ValueError(
                f"blur kernel {self.blur_kernel_size} is too large for size {size}: its radius "
                "must be smaller than both sides")

        mean = tuple(float(m) for m in as_sequence(self.mean, "mean"))
        std = tuple(float(s) for s in as_sequence(self.std, "std"))
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
            raise ValueError('order="mice" has no blur (docs/METHODS.md §2.3); set blur_prob=0')
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


def is_int(value):
    """Python or NumPy integer, not bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def as_sequence(value, name):
    if isinstance(value, (int, float)):
        return (value,)
    try:
        return tuple(value)
    except TypeError:
        raise ValueError(
            f"{name} must be a number or a sequence of numbers, got {value!r}") from None

