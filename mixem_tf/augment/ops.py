"""The image ops of the view pipelines, torchvision semantics in ``keras.ops`` (docs/METHODS.md
§5.6).

They take float32 ``[N, H, W, C]`` in ``[0, 1]`` and keep values there (only :func:`normalize`
leaves that range). The random ones come as ``*_from_uniform`` cores fed with uniforms that
``Augmenter`` draws once per view; ``*_DRAWS`` say how many each consumes per image.
"""

from __future__ import annotations

import math
from typing import Optional, Union

import keras
import numpy as np
from keras import ops

from mixem_tf.augment.config import as_sequence

#: Luma weights of ITU-R 601-2, as in PIL ``convert("L")`` and torchvision.
LUMA = (0.299, 0.587, 0.114)
#: Probability of a horizontal flip when ``AugmentConfig.flip`` is on (torchvision default).
FLIP_PROB = 0.5
#: Tries of torchvision's RandomResizedCrop before it falls back to a centre crop.
CROP_ATTEMPTS = 10
# Uniform draws per image that each random op consumes (see the ``*_from_uniform`` cores).
CROP_DRAWS = 2 * CROP_ATTEMPTS + 2   # area and log-ratio per try, top, left
JITTER_DRAWS = 9                     # 4 factors, 4 order keys, 1 apply
BLUR_DRAWS = 2                       # sigma, apply

SeedLike = Union[int, None, "keras.random.SeedGenerator"]

__all__ = ["adjust_brightness", "adjust_contrast", "adjust_hue", "adjust_saturation",
           "apply_color_jitter", "color_jitter_from_uniform", "convert_channels",
           "gaussian_blur", "gaussian_blur_from_uniform", "gaussian_kernel",
           "grayscale_from_uniform", "normalize", "random_flip", "resample_matrix", "resize",
           "resized_crop", "resized_crop_from_uniform", "rgb_luma", "sample_crop_boxes",
           "separable_resample", "static_hwc", "to_grayscale", "to_unit_float", "uniform"]


def uniform(shape, seed):
    """float32 uniforms in [0, 1) from an int, None or a SeedGenerator."""
    return keras.random.uniform(shape, 0.0, 1.0, dtype="float32", seed=seed)


def static_hwc(images, name="images"):
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


def to_unit_float(images):
    images = ops.convert_to_tensor(images)
    return ops.cast(images, "float32") / 255.0


def convert_channels(x, output_channels):
    c = static_hwc(x)[2]
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

    torchvision ``RandomResizedCrop.get_params`` per image (docs/METHODS.md §5.6): area fraction
    ~ U(scale), log aspect ratio ~ U(log ratio), ``w = round(sqrt(area * r))``,
    ``h = round(sqrt(area / r))``, the first of 10 tries that fits wins; if none fits, a centre
    crop of the whole image clamped to the ratio range.
    """
    u = uniform((batch_size, CROP_DRAWS), seed)
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
    (docs/METHODS.md §5.6). One separable resampling per image, as two batched matrix products.

    Args:
        images: float ``[N, H, W, C]``.
        boxes: ``[N, 4]`` (top, left, height, width) in pixels, inside the image.
        size: output ``(h, w)`` or an int.
        flip: ``None`` or bool ``[N]``: mirror the output horizontally.
    """
    out_h, out_w = (size, size) if isinstance(size, int) else tuple(size)
    height, width, _ = static_hwc(images)
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
    height, width, _ = static_hwc(images)
    if (out_h, out_w) == (height, width):
        return images
    n = ops.shape(images)[0]
    box = ops.convert_to_tensor([0.0, 0.0, float(height), float(width)])
    boxes = ops.zeros((n, 4), "float32") + box[None, :]
    return resized_crop(images, boxes, (out_h, out_w))


def resized_crop_from_uniform(images, u, size, scale, ratio, flip_prob):
    height, width, _ = static_hwc(images)
    boxes = _crop_boxes_from_uniform(u[:, :CROP_DRAWS], height, width, scale, ratio)
    flip = u[:, CROP_DRAWS] < flip_prob if flip_prob > 0.0 else None
    return resized_crop(images, boxes, size, flip)


def random_flip(images, prob: float = FLIP_PROB, seed: SeedLike = None):
    """torchvision ``RandomHorizontalFlip(p)``: mirror each image with probability ``prob``."""
    n = ops.shape(images)[0]
    flip = uniform((n,), seed) < prob
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


def color_jitter_from_uniform(images, u, strengths, hue, prob):
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
    grey = static_hwc(images)[2] == 1
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


def grayscale_from_uniform(images, u, prob):
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
    ``[N]``), like MIX'EM's ``cv2.GaussianBlur(img, (k, k), sigma)`` (docs/METHODS.md §1.3).

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
    height, width, _ = static_hwc(images)
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


def gaussian_blur_from_uniform(images, u, prob, sigma, kernel_size):
    if prob <= 0.0 or kernel_size < 3:
        return images
    blurred = gaussian_blur(images, sigma[0] + (sigma[1] - sigma[0]) * u[:, 0], kernel_size)
    if prob >= 1.0:
        return blurred
    return ops.where((u[:, 1] < prob)[:, None, None, None], blurred, images)


def normalize(images, mean, std):
    """torchvision ``Normalize``: ``(x - mean) / std`` per channel; one value applies to all
    channels, otherwise one value per channel."""
    mean, std = tuple(as_sequence(mean, "mean")), tuple(as_sequence(std, "std"))
    c = images.shape[-1]
    if len(mean) not in (1, c) or len(std) not in (1, c):
        raise ValueError(
            f"mean/std have {len(mean)}/{len(std)} values but the images have {c} channels")
    mean = ops.convert_to_tensor(mean, dtype="float32")
    std = ops.convert_to_tensor(std, dtype="float32")
    return (images - mean) / std

