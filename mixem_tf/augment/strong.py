"""Strong views: RandAugment-style ops plus cutout, batched and seeded, in ``keras.ops``.

SCAN's "ours" augmentation (Van Gansbeke et al., arXiv 2005.12320; its official
``data/augment.py``; docs/METHODS.md, "SCAN and self-labelling"), used by both of its stages:
per image a horizontal flip (p 0.5, where the dataset's views flip), then ``num_ops`` ops drawn
with replacement from :data:`STRONG_OPS`, each at a magnitude uniform in its range, then
normalisation, then one cutout square whose side is uniform in ``1 .. cutout`` pixels (16 at
32 px), centred uniformly in the image and clipped at its border, set to 0 (the normalised
mean colour), as the official ``Cutout`` on the normalised tensor.

The ops follow PIL's semantics on uint8 images (``ImageOps``, ``ImageEnhance``, affine
``transform`` with nearest-neighbour sampling and black fill): the image is kept on the 1/255
grid, rounding after every op as PIL does. Geometric ops (rotate, shear, translate) mirror
their magnitude with p 0.5, as the official code. Each op runs on the whole batch and is
selected per image (no data-dependent Python control flow), so a view is drawn inside a
compiled training step under ``KERAS_BACKEND=tensorflow`` or ``jax``.

Deliberate differences from the official code: the image is first resized to the configured
size (its ``RandomCrop`` at the image's own size is the identity), and a grey image is never
converted to RGB (``color`` is then the identity, as PIL's on mode "L").
"""

from __future__ import annotations

import math
from typing import Optional

import keras
from keras import ops

from mixem_tf.augment.config import AugmentConfig, is_int
from mixem_tf.augment.ops import (FLIP_PROB, normalize, resize, rgb_luma, static_hwc)
from mixem_tf.augment.pipeline import Augmenter, _prepare

__all__ = ["STRONG_OPS", "StrongAugmenter", "affine_nearest", "autocontrast",
           "brightness_blend", "color_blend", "contrast_blend", "cutout", "equalize",
           "posterize", "sharpness_blend", "solarize", "strong_op"]

#: The official ``augment_list()``: op name → (magnitude low, magnitude high).
STRONG_OPS = {
    "identity": (0.0, 1.0),
    "autocontrast": (0.0, 1.0),
    "equalize": (0.0, 1.0),
    "rotate": (-30.0, 30.0),         # degrees
    "solarize": (0.0, 256.0),        # threshold on 0..255
    "color": (0.05, 0.95),           # enhance factors: every one of them weakens the image
    "contrast": (0.05, 0.95),
    "brightness": (0.05, 0.95),
    "sharpness": (0.05, 0.95),
    "shear_x": (-0.1, 0.1),
    "translate_x": (-0.1, 0.1),      # a fraction of the width
    "translate_y": (-0.1, 0.1),
    "posterize": (4.0, 8.0),         # bits kept (int of the magnitude)
    "shear_y": (-0.1, 0.1),
}
_NAMES = tuple(STRONG_OPS)
_GEOMETRIC = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")
# Uniform draws per image: per op slot the op, its magnitude and its mirror sign; then the
# flip and the cutout's side, row and column.
_SLOT_DRAWS = 3
_FIXED_DRAWS = 4


def _levels(x):
    """float [0, 1] → the same image on 0..255 (float)."""
    return x * 255.0


def _quantise(x):
    """Back onto the uint8 grid, as PIL stores every op's result."""
    return ops.clip(ops.round(x * 255.0), 0.0, 255.0) / 255.0


def _per_image(value):
    return ops.reshape(ops.cast(value, "float32"), (-1, 1, 1, 1))


def _channel_rows(x):
    """[N, H, W, C] → [N·C, H·W] (each row one channel of one image)."""
    h, w, c = static_hwc(x)
    return ops.reshape(ops.transpose(x, (0, 3, 1, 2)), (-1, h * w))


def _from_channel_rows(rows, like):
    h, w, c = static_hwc(like)
    return ops.transpose(ops.reshape(rows, (-1, c, h, w)), (0, 2, 3, 1))


def autocontrast(x):
    """PIL ``ImageOps.autocontrast`` (cutoff 0): each channel stretched so its darkest pixel
    becomes 0 and its brightest 255 (``int(i * scale + offset)``); a flat channel is kept."""
    v = _levels(x)
    lo = ops.min(v, axis=(1, 2), keepdims=True)
    hi = ops.max(v, axis=(1, 2), keepdims=True)
    span = ops.where(hi > lo, hi - lo, 1.0)
    stretched = ops.floor((v - lo) * 255.0 / span + 1e-4)
    return ops.where(hi > lo, ops.clip(stretched, 0.0, 255.0), v) / 255.0


def equalize(x):
    """PIL ``ImageOps.equalize``, per channel: the lookup table
    ``lut[i] = (step // 2 + #pixels below i) // step`` with ``step = (#pixels − #pixels at the
    brightest level) // 255``; a channel with one level or ``step = 0`` is kept."""
    rows = ops.cast(ops.round(_channel_rows(_levels(x))), "int32")       # [M, P]
    count = ops.shape(rows)[0]
    pixels = rows.shape[1]
    offsets = ops.arange(count, dtype="int32")[:, None] * 256
    histogram = ops.segment_sum(ops.reshape(ops.ones_like(rows, "float32"), (-1,)),
                                ops.reshape(rows + offsets, (-1,)), num_segments=count * 256)
    histogram = ops.reshape(histogram, (-1, 256))                        # [M, 256]
    brightest = ops.max(rows, axis=1, keepdims=True)
    at_brightest = ops.take_along_axis(histogram, brightest, axis=1)     # [M, 1]
    step = ops.floor((float(pixels) - at_brightest) / 255.0)
    below = ops.cumsum(histogram, axis=1) - histogram                    # pixels below i
    safe_step = ops.maximum(step, 1.0)
    lut = ops.clip(ops.floor((ops.floor(step / 2.0) + below) / safe_step), 0.0, 255.0)
    mapped = ops.take_along_axis(lut, rows, axis=1)
    levels = ops.sum(ops.cast(histogram > 0, "int32"), axis=1, keepdims=True)
    keep = (step < 1.0) | (levels <= 1)
    out = ops.where(keep, ops.cast(rows, "float32"), mapped)
    return _from_channel_rows(out, x) / 255.0


def solarize(x, threshold):
    """PIL ``ImageOps.solarize``: levels at or above ``threshold`` (per image, on 0..255)
    are inverted."""
    v = _levels(x)
    return ops.where(v < _per_image(threshold), v, 255.0 - v) / 255.0


def posterize(x, bits):
    """PIL ``ImageOps.posterize``: keep the ``bits`` (per image, 1..8) high bits of each level."""
    size = ops.power(2.0, 8.0 - ops.floor(_per_image(bits)))
    return ops.floor(_levels(x) / size) * size / 255.0


def _blend(degenerate, x, factor):
    """PIL ``ImageEnhance``: ``degenerate + factor · (x − degenerate)``, clipped."""
    return ops.clip(degenerate + _per_image(factor) * (x - degenerate), 0.0, 1.0)


def _grey(x):
    """PIL ``convert("L")`` levels, as [0, 1] floats (one channel)."""
    return _quantise(rgb_luma(x))


def color_blend(x, factor):
    """PIL ``ImageEnhance.Color``: blend with the grey image (identity on grey images)."""
    if x.shape[-1] == 1:
        return x
    return _blend(_grey(x), x, factor)


def contrast_blend(x, factor):
    """PIL ``ImageEnhance.Contrast``: blend with the grey image's mean level (rounded)."""
    mean = ops.floor(ops.mean(_levels(_grey(x)), axis=(1, 2, 3), keepdims=True) + 0.5) / 255.0
    return _blend(mean, x, factor)


def brightness_blend(x, factor):
    """PIL ``ImageEnhance.Brightness``: blend with black."""
    return _blend(ops.zeros_like(x), x, factor)


def sharpness_blend(x, factor):
    """PIL ``ImageEnhance.Sharpness``: blend with ``ImageFilter.SMOOTH`` (3×3 kernel of ones
    with 5 in the centre, over 13), which keeps the border pixels."""
    h, w, _ = static_hwc(x)
    padded = ops.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    total = sum(padded[:, i:i + h, j:j + w] for i in range(3) for j in range(3))
    smooth = _quantise((total + 4.0 * x) / 13.0)
    rows = ops.arange(h)[:, None]
    cols = ops.arange(w)[None, :]
    interior = (rows > 0) & (rows < h - 1) & (cols > 0) & (cols < w - 1)
    smooth = ops.where(interior[None, :, :, None], smooth, x)
    return _blend(smooth, x, factor)


def affine_nearest(x, matrices):
    """PIL ``Image.transform(size, AFFINE, (a, b, c, d, e, f))`` with nearest sampling and
    black fill, per image: output pixel (x, y) reads input pixel
    ``(floor(a·x' + b·y' + c), floor(d·x' + e·y' + f))`` at its centre ``(x', y') =
    (x + ½, y + ½)``.

    Args:
        x: float [N, H, W, C].
        matrices: [N, 6] coefficients (a, b, c, d, e, f).
    """
    h, w, c = static_hwc(x)
    m = ops.cast(matrices, "float32")
    ys, xs = ops.meshgrid(ops.arange(h, dtype="float32") + 0.5,
                          ops.arange(w, dtype="float32") + 0.5, indexing="ij")
    xs, ys = ops.reshape(xs, (1, -1)), ops.reshape(ys, (1, -1))          # [1, P]
    source_x = ops.floor(m[:, 0:1] * xs + m[:, 1:2] * ys + m[:, 2:3])    # [N, P]
    source_y = ops.floor(m[:, 3:4] * xs + m[:, 4:5] * ys + m[:, 5:6])
    inside = (source_x >= 0) & (source_x < w) & (source_y >= 0) & (source_y < h)
    index = ops.cast(ops.clip(source_y, 0, h - 1) * w + ops.clip(source_x, 0, w - 1), "int32")
    flat = ops.reshape(x, (-1, h * w, c))
    gathered = ops.take_along_axis(flat, ops.repeat(index[:, :, None], c, axis=2), axis=1)
    gathered = ops.where(inside[:, :, None], gathered, 0.0)
    return ops.reshape(gathered, (-1, h, w, c))


def _affine_matrices(op, value, height, width):
    """[N, 6] inverse maps of the geometric ops (identity for every other op), as PIL's
    ``rotate`` (about the centre, counter-clockwise degrees), ``ShearX/Y`` and
    ``TranslateX/Y`` (a fraction of the side) build them."""
    def chosen(name):
        return ops.cast(op == _NAMES.index(name), "float32")

    angle = -value * math.pi / 180.0 * chosen("rotate")
    cos, sin = ops.cos(angle), ops.sin(angle)
    cx, cy = width / 2.0, height / 2.0
    a, b, d, e = cos, sin, -sin, cos
    c = a * -cx + b * -cy + cx
    f = d * -cx + e * -cy + cy
    b = b + value * chosen("shear_x")
    d = d + value * chosen("shear_y")
    c = c + value * width * chosen("translate_x")
    f = f + value * height * chosen("translate_y")
    return ops.stack([a, b, c, d, e, f], axis=1)


def strong_op(x, op, value):
    """One op of :data:`STRONG_OPS` per image: ``op`` int [N] (its index), ``value`` [N] (its
    magnitude, sign already drawn); the result back on the uint8 grid."""
    h, w, _ = static_hwc(x)
    x = affine_nearest(x, _affine_matrices(op, value, h, w))
    results = {
        "autocontrast": autocontrast(x), "equalize": equalize(x),
        "solarize": solarize(x, value), "color": color_blend(x, value),
        "contrast": contrast_blend(x, value), "brightness": brightness_blend(x, value),
        "sharpness": sharpness_blend(x, value), "posterize": posterize(x, value),
    }
    for name, result in results.items():
        x = ops.where(_per_image(op == _NAMES.index(name)) > 0, result, x)
    return _quantise(x)


def cutout(x, side, top, left):
    """The official ``Cutout``: zero a square of ``side`` [N] pixels centred at (``top``,
    ``left``) [N], clipped at the border: rows ``[top − side//2, top + side//2)``, columns
    likewise."""
    h, w, _ = static_hwc(x)
    side, top, left = (ops.cast(v, "float32") for v in (side, top, left))
    half = ops.floor(side / 2.0)[:, None]
    rows = ops.arange(h, dtype="float32")[None, :]
    cols = ops.arange(w, dtype="float32")[None, :]
    in_rows = (rows >= top[:, None] - half) & (rows < top[:, None] + half)        # [N, H]
    in_cols = (cols >= left[:, None] - half) & (cols < left[:, None] + half)      # [N, W]
    hole = in_rows[:, :, None] & in_cols[:, None, :]
    return ops.where(hole[:, :, :, None], 0.0, x)


@keras.saving.register_keras_serializable("mixem_tf")
class StrongAugmenter(Augmenter):
    """Draws one strong view per call (see the module docstring).

    Args:
        config: the :class:`AugmentConfig` whose size, channels, flip and normalisation the
            view uses (its SimCLR settings are not used).
        num_ops: ops per image (official: 4).
        cutout_fraction: the largest cutout side as a fraction of the shorter image side
            (official: 16 px at 32 px, 0.5); 0 disables the cutout.
        seed: int or ``None``; one seed gives the same sequence of views.

    Example:
        >>> strong = StrongAugmenter(SCAN.augmentation("cifar10"), seed=0)
        >>> view = strong(uint8_batch)            # float32 [N, 32, 32, 3], normalised
    """

    def __init__(self, config: AugmentConfig, num_ops: int = 4, cutout_fraction: float = 0.5,
                 seed: Optional[int] = None, **kwargs):
        super().__init__(config, seed=seed, **kwargs)
        if not is_int(num_ops) or num_ops < 0:
            raise ValueError(f"num_ops must be an int >= 0, got {num_ops!r}")
        if not 0.0 <= cutout_fraction <= 1.0:
            raise ValueError(f"cutout_fraction must be in [0, 1], got {cutout_fraction}")
        self.num_ops = int(num_ops)
        self.cutout_fraction = float(cutout_fraction)

    @property
    def cutout_side(self) -> int:
        """The largest cutout side in pixels (16 at 32 px with the official 0.5)."""
        return int(self.cutout_fraction * min(self.config.size))

    def call(self, images):
        cfg = self.config
        x = resize(_prepare(images, cfg), cfg.size)
        h, w, _ = static_hwc(x)
        u = self._draw(ops.shape(x)[0], self.num_ops * _SLOT_DRAWS + _FIXED_DRAWS)
        if cfg.flip:
            x = ops.where(_per_image(u[:, 0] < FLIP_PROB) > 0, ops.flip(x, axis=2), x)
        x = _quantise(x)
        lows = ops.convert_to_tensor([low for low, _ in STRONG_OPS.values()], "float32")
        highs = ops.convert_to_tensor([high for _, high in STRONG_OPS.values()], "float32")
        mirrored = ops.convert_to_tensor([name in _GEOMETRIC for name in _NAMES], "bool")
        for slot in range(self.num_ops):
            draw = u[:, _FIXED_DRAWS + slot * _SLOT_DRAWS:][:, :_SLOT_DRAWS]
            op = ops.minimum(ops.cast(ops.floor(draw[:, 0] * len(_NAMES)), "int32"),
                             len(_NAMES) - 1)
            low, high = ops.take(lows, op), ops.take(highs, op)
            value = low + draw[:, 1] * (high - low)
            value = ops.where(ops.take(mirrored, op) & (draw[:, 2] < 0.5), -value, value)
            x = strong_op(x, op, value)
        x = normalize(x, cfg.mean, cfg.std)
        side = self.cutout_side
        if side >= 1:
            length = 1.0 + ops.minimum(ops.floor(u[:, 1] * side), side - 1.0)
            top = ops.minimum(ops.floor(u[:, 2] * h), h - 1.0)
            left = ops.minimum(ops.floor(u[:, 3] * w), w - 1.0)
            x = cutout(x, length, top, left)
        return x

    def get_config(self):
        return {**super().get_config(), "num_ops": self.num_ops,
                "cutout_fraction": self.cutout_fraction}
