"""Tests of mixem_tf.augment against NumPy/colorsys/SciPy/PIL references (docs/METHODS.md §1.3,
§2.3,
§3.3, §5.6). Backend-neutral: run under KERAS_BACKEND=tensorflow and KERAS_BACKEND=jax."""

import colorsys
import dataclasses
import itertools
import math

import keras
import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from mixem_tf import augment as A
from mixem_tf.methods import MixEM, SimCLR
from mixem_tf.methods.augmentation import DIGITS_CROP_SCALE, PIPELINES, view_config

pytestmark = pytest.mark.core

LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def np_(x):
    return keras.ops.convert_to_numpy(x)


def unit_images(n, h, w, c, seed=0):
    return np.random.default_rng(seed).uniform(0.0, 1.0, (n, h, w, c)).astype(np.float32)


def uint8_images(n, h, w, c, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, c), dtype=np.uint8)


def only(size, **kwargs):
    """A config with every random op off except the ones given; identity full-image crop."""
    base = dict(size=size, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip=False,
                brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0, jitter_prob=1.0,
                gray_prob=0.0, blur_prob=0.0)
    base.update(kwargs)
    return A.AugmentConfig(**base)


# ---------------------------------------------------------------- NumPy references


def ref_luma(x):
    return x if x.shape[-1] == 1 else (x @ LUMA)[..., None]


def ref_brightness(x, f):
    return np.clip(x * f, 0, 1)


def ref_contrast(x, f):
    return np.clip(f * x + (1 - f) * ref_luma(x).mean(), 0, 1)


def ref_saturation(x, f):
    return np.clip(f * x + (1 - f) * ref_luma(x), 0, 1)


def ref_hue(x, f):
    out = np.empty_like(x)
    for idx in np.ndindex(x.shape[:-1]):
        h, s, v = colorsys.rgb_to_hsv(*x[idx])
        out[idx] = colorsys.hsv_to_rgb((h + f) % 1.0, s, v)
    return out


def ref_bilinear_crop(img, top, left, ch, cw, oh, ow):
    """Half-pixel bilinear upsampling of a crop, edges clamped to the crop (torch
    ``interpolate(align_corners=False)``); only for crops not larger than the output."""
    crop = img[top:top + ch, left:left + cw].astype(np.float64)

    def axis(n_out, n_in):
        src = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        lo = np.floor(src).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, src - lo

    y0, y1, wy = axis(oh, ch)
    x0, x1, wx = axis(ow, cw)
    rows = crop[y0] * (1 - wy)[:, None, None] + crop[y1] * wy[:, None, None]
    return rows[:, x0] * (1 - wx)[None, :, None] + rows[:, x1] * wx[None, :, None]


def ref_crop_params(rng, height, width, scale, ratio):
    """torchvision RandomResizedCrop.get_params, one image (written from its documentation)."""
    area = height * width
    for _ in range(10):
        target = area * rng.uniform(*scale)
        r = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        w, h = int(round(math.sqrt(target * r))), int(round(math.sqrt(target / r)))
        if 0 < w <= width and 0 < h <= height:
            return rng.integers(0, height - h + 1), rng.integers(0, width - w + 1), h, w
    raise AssertionError("reference fell back; not used in these tests")


# ---------------------------------------------------------------- configuration and presets


def test_config_validation():
    good = A.AugmentConfig(size=32)
    assert good.size == (32, 32) and good.blur_kernel_size == 3 and good.blur_enabled
    assert A.AugmentConfig(size=[96, 96]).blur_kernel_size == 9
    assert A.AugmentConfig(size=28).blur_kernel_size == 3
    assert not A.AugmentConfig(size=8).blur_enabled
    bad = [dict(size=0), dict(size=(32, 32, 3)), dict(size=32.0), dict(crop_scale=(0.5, 0.1)),
           dict(crop_scale=(0.0, 1.0)), dict(crop_scale=(0.1, 1.5)), dict(crop_ratio=(0, 1)),
           dict(brightness=-0.1), dict(hue=0.6), dict(jitter_prob=1.5), dict(gray_prob=-0.1),
           dict(blur_sigma=(2.0, 0.1)), dict(blur_kernel=4), dict(mean=(0.5, 0.5)),
           dict(mean=(0.5,), std=(0.0,)), dict(order="byol"), dict(order="mice"),
           dict(flip="yes"), dict(output_channels=2),
           dict(output_channels=1, mean=(0, 0, 0), std=(1, 1, 1)), dict(size=(96, 4))]
    for kwargs in bad:
        with pytest.raises(ValueError):
            A.AugmentConfig(**{"size": 32, **kwargs})
    cfg = view_config("mice", "stl10")
    assert A.AugmentConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError):
        A.AugmentConfig.from_dict({**cfg.to_dict(), "colour": 1})


def test_presets_follow_methods_md():
    for method in PIPELINES:
        for dataset in ("stl10", "cifar10", "cifar100_20", "mnist", "fashion_mnist", "digits"):
            cfg = view_config(method, dataset)
            if dataset in ("mnist", "fashion_mnist", "digits"):
                assert cfg.saturation == cfg.hue == cfg.gray_prob == 0.0 and len(cfg.mean) == 1
            assert cfg.flip == (dataset not in ("mnist", "digits"))
    mixem = view_config("simclr", "stl10")
    assert MixEM.augmentation("stl10") == SimCLR.augmentation("stl10") == mixem
    assert (mixem.size, mixem.crop_scale, mixem.jitter_prob, mixem.blur_kernel_size) == \
        ((96, 96), (0.08, 1.0), 0.8, 9)
    assert (mixem.brightness, mixem.hue, mixem.mean, mixem.std) == (0.8, 0.2, (0.0,), (1.0,))
    assert view_config("simclr", "cifar10").std == (0.2023, 0.1994, 0.2010)
    assert view_config("simclr", "cifar100_20").mean == (0.507, 0.487, 0.441)
    mice = view_config("mice", "cifar10")
    assert (mice.order, mice.crop_scale, mice.jitter_prob, mice.hue, mice.blur_prob) == \
        ("mice", (0.2, 1.0), 1.0, 0.4, 0.0)
    assert mice.std == (0.2470, 0.2435, 0.2616)
    assert view_config("mice", "stl10").mean == (0.4409, 0.4279, 0.3868)
    anchor = view_config("cdec", "cifar10")
    assert (anchor.brightness, anchor.hue, anchor.blur_enabled, anchor.mean) == \
        (0.4, 0.1, False, (0.0,))
    assert view_config("cdec", "cifar10", image_size=224).size == (224, 224)
    assert view_config("simclr", "digits").crop_scale == DIGITS_CROP_SCALE
    assert not view_config("simclr", "digits").blur_enabled
    assert view_config("simclr", "folder:/data/x", image_size=(48, 64)).size == (48, 64)
    for args in [("simclr", "folder:/data/x"), ("byol", "cifar10"), ("simclr", "imagenet")]:
        with pytest.raises(ValueError):
            view_config(*args)


# ---------------------------------------------------------------- ops vs references


# Tests reuse few shapes: under eager JAX every new shape compiles each primitive again.
OP_SHAPE = (24, 5, 6, 3)   # op tests (24 = the number of ColorJitter orders)
N_STAT = 4000              # statistical tests, on 4x4 images


def test_brightness_contrast_saturation_grayscale_normalize():
    x = unit_images(*OP_SHAPE)
    f = np.linspace(0.0, 2.0, OP_SHAPE[0]).astype(np.float32)
    for op, ref in ((A.adjust_brightness, ref_brightness), (A.adjust_contrast, ref_contrast),
                    (A.adjust_saturation, ref_saturation)):
        got = np_(op(x, f))
        want = np.stack([ref(x[i], f[i]) for i in range(len(x))])
        np.testing.assert_allclose(got, want, atol=1e-5, err_msg=op.__name__)
        np.testing.assert_allclose(np_(op(x, 0.5)), np.stack([ref(xi, 0.5) for xi in x]),
                                   atol=1e-5)
    g = unit_images(*OP_SHAPE[:3], 1)
    np.testing.assert_allclose(np_(A.adjust_contrast(g, 0.5)),
                               np.stack([ref_contrast(gi, 0.5) for gi in g]), atol=1e-6)
    np.testing.assert_array_equal(np_(A.adjust_saturation(g, 0.2)), g)
    np.testing.assert_array_equal(np_(A.adjust_hue(g, 0.2)), g)
    gray = np_(A.to_grayscale(x))
    np.testing.assert_allclose(gray, np.repeat(ref_luma(x), 3, -1), atol=1e-6)
    assert np_(A.to_grayscale(x, 1)).shape == OP_SHAPE[:3] + (1,)
    np.testing.assert_array_equal(np_(A.to_grayscale(g)), g)
    mean, std = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
    np.testing.assert_allclose(np_(A.normalize(x, mean, std)),
                               (x - np.array(mean)) / np.array(std), atol=1e-5)
    with pytest.raises(ValueError):
        A.normalize(g, mean, std)


def test_hue_matches_colorsys():
    x = unit_images(*OP_SHAPE, seed=1)
    x[0, 0, 0] = [0.5, 0.5, 0.5]  # grey pixel: hue undefined, must stay put
    x[0, 0, 1] = [0.0, 0.0, 0.0]
    x[0, 0, 2] = [1.0, 0.0, 1.0]
    x[1, 0, :3] = [[1.0, 0.5, 0.5], [0.2, 0.9, 0.2], [0.3, 0.3, 0.8]]
    shifts = np.linspace(-0.5, 0.5, OP_SHAPE[0]).astype(np.float32)
    got = np_(A.adjust_hue(x, shifts))
    want = np.stack([ref_hue(x[i], shifts[i]) for i in range(len(x))])
    np.testing.assert_allclose(got, want, atol=2e-5)


def test_color_jitter_every_order_matches_sequential_reference():
    perms = np.array(list(itertools.permutations(range(4))), np.int32)  # 24 orders
    n = len(perms)
    assert n == OP_SHAPE[0]
    rng = np.random.default_rng(2)
    x = unit_images(*OP_SHAPE, seed=2)
    factors = np.stack([rng.uniform(0.2, 1.8, n), rng.uniform(0.2, 1.8, n),
                        rng.uniform(0.2, 1.8, n), rng.uniform(-0.4, 0.4, n)], 1)
    factors = factors.astype(np.float32)
    got = np_(A.apply_color_jitter(x, factors, perms))
    refs = (ref_brightness, ref_contrast, ref_saturation, ref_hue)
    for i in range(n):
        want = x[i]
        for op in perms[i]:
            want = refs[op](want, factors[i, op])
        np.testing.assert_allclose(got[i], want, atol=5e-5, err_msg=str(perms[i]))


def test_gaussian_blur_matches_scipy():
    x = unit_images(*OP_SHAPE, seed=3)
    sigma = np.linspace(0.1, 2.0, OP_SHAPE[0]).astype(np.float32)
    got = np_(A.gaussian_blur(x, sigma, 5))
    for i in range(len(x)):
        t = np.arange(5) - 2.0
        w = np.exp(-t ** 2 / (2 * sigma[i] ** 2))
        w /= w.sum()
        # scipy "mirror" = d c b | a b c d = OpenCV BORDER_REFLECT_101.
        want = ndimage.correlate1d(x[i].astype(np.float64), w, axis=0, mode="mirror")
        want = ndimage.correlate1d(want, w, axis=1, mode="mirror")
        np.testing.assert_allclose(got[i], want, atol=1e-5)
    kernel = np_(A.gaussian_kernel(1.0, 9))
    assert kernel.shape == (9,) and abs(kernel.sum() - 1) < 1e-6 and kernel.argmax() == 4
    with pytest.raises(ValueError):
        A.gaussian_blur(x, 1.0, 4)
    with pytest.raises(ValueError):
        A.gaussian_blur(x, 1.0, 11)


def test_resized_crop_matches_bilinear_and_pil_and_flip():
    x = unit_images(*OP_SHAPE, seed=4)
    n = len(x)
    # Upsampling crops: compare with plain half-pixel bilinear clamped to the crop.
    boxes = np.tile(np.array([[2, 3, 3, 2], [0, 0, 5, 6], [1, 0, 4, 5]], np.float32), (8, 1))
    got = np_(A.resized_crop(x, boxes, (8, 7)))
    for i, (t, l, h, w) in enumerate(boxes.astype(int)):
        np.testing.assert_allclose(got[i], ref_bilinear_crop(x[i], t, l, h, w, 8, 7),
                                   atol=1e-5)
    flip = np.arange(n) % 2 == 0
    flipped = np_(A.resized_crop(x, boxes, (8, 7), flip=flip))
    np.testing.assert_allclose(flipped[flip], got[flip][:, :, ::-1], atol=1e-6)
    np.testing.assert_allclose(flipped[~flip], got[~flip], atol=1e-6)
    # Shrinking crops: PIL crop then antialiased bilinear resize (torchvision on PIL images).
    boxes = np.tile(np.array([[1, 2, 4, 4], [0, 0, 5, 6]], np.float32), (12, 1))
    got = np_(A.resized_crop(x, boxes, (2, 3)))
    for i, (t, l, h, w) in enumerate(boxes.astype(int)):
        for c in range(3):
            crop = np.ascontiguousarray(x[i, t:t + h, l:l + w, c])
            pil = Image.fromarray(crop, mode="F").resize((3, 2), Image.BILINEAR)
            np.testing.assert_allclose(got[i, :, :, c], np.asarray(pil), atol=1e-5)
    np.testing.assert_allclose(np_(A.resize(x, OP_SHAPE[1:3])), x)
    np.testing.assert_allclose(np_(A.random_flip(x, prob=1.0)), x[:, :, ::-1], atol=0)


# ---------------------------------------------------------------- crop sampling statistics


def test_crop_sampling_statistics_match_torchvision_reference():
    n, height, width = N_STAT, 32, 40
    boxes = np_(A.sample_crop_boxes(n, height, width, seed=5))
    top, left, h, w = boxes.T
    assert np.all(boxes == np.round(boxes)) and np.all(h >= 1) and np.all(w >= 1)
    assert np.all(top >= 0) and np.all(left >= 0)
    assert np.all(top + h <= height) and np.all(left + w <= width)
    rng = np.random.default_rng(0)
    ref = np.array([ref_crop_params(rng, height, width, (0.08, 1.0), (0.75, 4 / 3))
                    for _ in range(n)], np.float64)
    frac, ref_frac = h * w / (height * width), ref[:, 2] * ref[:, 3] / (height * width)
    assert 0.08 * 0.9 < frac.min() and frac.max() <= 1.0
    # Standard errors at n = 4000: area fraction about 0.0045, log ratio about 0.0027.
    assert abs(frac.mean() - ref_frac.mean()) < 0.025, (frac.mean(), ref_frac.mean())
    assert abs(np.log(w / h).mean() - np.log(ref[:, 3] / ref[:, 2]).mean()) < 0.015
    # Positions uniform over the valid range: the relative position averages one half.
    rel = top[h < height] / (height - h[h < height])
    assert abs(rel.mean() - 0.5) < 0.025


def test_crop_fallback_is_centre_crop_clamped_to_ratio():
    # No try can fit: every area >= 0.95 of the image needs h > 10 at these ratios.
    wide = np_(A.sample_crop_boxes(N_STAT, 10, 100, scale=(0.95, 1.0), seed=0))
    np.testing.assert_array_equal(wide, np.tile([[0, 43, 10, 13]], (N_STAT, 1)))
    tall = np_(A.sample_crop_boxes(N_STAT, 100, 10, scale=(0.95, 1.0), seed=0))
    np.testing.assert_array_equal(tall, np.tile([[43, 0, 13, 10]], (N_STAT, 1)))
    square = np_(A.sample_crop_boxes(N_STAT, 8, 8, scale=(1.0, 1.0), ratio=(2.0, 3.0), seed=0))
    np.testing.assert_array_equal(square, np.tile([[2, 0, 4, 8]], (N_STAT, 1)))


# ---------------------------------------------------------------- probabilities


def frac_changed(before, after):
    return float(np.mean(np.any(np.abs(after - before) > 1e-6, axis=(1, 2, 3))))


def test_probabilities():
    x = uint8_images(N_STAT, 4, 4, 3, seed=6)
    xf = x.astype(np.float32) / 255
    tol = 0.035  # > 4 standard deviations at p = 0.5 and n = 4000

    out = np_(A.Augmenter(only(4, gray_prob=0.2), seed=0)(x))
    is_gray = np.all(np.abs(out - out[..., :1]) < 1e-6, axis=(1, 2, 3))
    assert abs(is_gray.mean() - 0.2) < tol

    out = np_(A.Augmenter(only(4, flip=True), seed=0)(x))
    flipped = np.all(np.abs(out - xf[:, :, ::-1]) < 1e-6, axis=(1, 2, 3))
    kept = np.all(np.abs(out - xf) < 1e-6, axis=(1, 2, 3))
    assert np.all(flipped | kept) and abs(flipped.mean() - 0.5) < tol

    out = np_(A.Augmenter(only(4, brightness=0.5, jitter_prob=0.8), seed=0)(x))
    assert abs(frac_changed(xf, out) - 0.8) < tol

    out = np_(A.Augmenter(only(4, blur_prob=0.5, blur_kernel=3), seed=0)(x))
    assert abs(frac_changed(xf, out) - 0.5) < tol

    # Jitter factors cover U[1 - b, 1 + b]: brightness ratio of a mid-grey image.
    mid = np.full((N_STAT, 4, 4, 3), 100, np.uint8)
    out = np_(A.Augmenter(only(4, brightness=0.4), seed=1)(mid))
    ratio = out[:, 0, 0, 0] / (100 / 255)
    assert 0.6 - 1e-4 <= ratio.min() < 0.62 and 1.38 < ratio.max() <= 1.4 + 1e-4
    assert abs(ratio.mean() - 1.0) < 0.02


# ---------------------------------------------------------------- the layer


# Layer tests use batch size 1 (the classic crash) and few input shapes.
@pytest.mark.parametrize("method,dataset", [("simclr", "mnist"), ("mice", "cifar10"),
                                            ("simclr", "cifar10"), ("cdec", "cifar10"),
                                            ("mice", "digits")])
def test_augmenter_shapes_dtypes_ranges(method, dataset):
    n = 1
    cfg = view_config(method, dataset)
    h, w = cfg.size
    c = 1 if dataset in ("mnist", "digits") else 3
    x = uint8_images(n, h, w, c)
    out = np_(A.Augmenter(cfg, seed=0)(x))
    assert out.shape == (n, h, w, c) and out.dtype == np.float32
    mean, std = np.array(cfg.mean), np.array(cfg.std)
    assert np.all(out >= (0 - mean) / std - 1e-5) and np.all(out <= (1 - mean) / std + 1e-5)
    assert np.isfinite(out).all() and out.std() > 0
    clean = np_(A.preprocess(x, cfg))
    np.testing.assert_allclose(clean, (x / 255.0 - mean) / std, atol=1e-5)
    np.testing.assert_allclose(np_(A.preprocess(x.astype(np.float32), cfg)), clean, atol=1e-6)


def test_channel_conversion_and_resize():
    grey = uint8_images(1, 32, 32, 1)
    cfg = A.AugmentConfig(size=40, output_channels=3, mean=(0.5,), std=(0.5,))
    layer = A.Augmenter(cfg, seed=0)
    assert layer.compute_output_shape((None, 32, 32, 1)) == (None, 40, 40, 3)
    clean = np_(A.preprocess(grey, cfg))
    assert clean.shape == (1, 40, 40, 3)
    np.testing.assert_allclose(clean[..., 0], clean[..., 2], atol=1e-6)
    view = np_(A.Augmenter(only(32, output_channels=3), seed=0)(grey))
    np.testing.assert_allclose(view, np.repeat(grey / 255.0, 3, axis=-1), atol=1e-6)
    rgb = uint8_images(1, 32, 32, 3)
    assert np_(A.preprocess(rgb, A.AugmentConfig(size=16, output_channels=1))).shape == \
        (1, 16, 16, 1)
    with pytest.raises(ValueError):
        A.preprocess(uint8_images(1, 8, 8, 2), A.AugmentConfig(size=8))
    with pytest.raises(ValueError):
        A.Augmenter(view_config("simclr", "cifar10"))(grey)  # 3-value mean on a grey batch


def test_seeded_determinism_and_serialisation():
    cfg = view_config("simclr", "cifar10")
    x = uint8_images(1, 32, 32, 3)
    a, b, c = A.Augmenter(cfg, seed=7), A.Augmenter(cfg, seed=7), A.Augmenter(cfg, seed=8)
    a1, a2 = np_(a(x)), np_(a(x))
    np.testing.assert_array_equal(a1, np_(b(x)))
    np.testing.assert_array_equal(a2, np_(b(x)))
    assert np.abs(a1 - a2).max() > 0.1 and np.abs(a1 - np_(c(x))).max() > 0.1
    clone = keras.layers.deserialize(keras.layers.serialize(a))
    assert isinstance(clone, A.Augmenter) and clone.config == cfg and clone.seed == 7
    with pytest.raises(ValueError):
        A.Augmenter(cfg, seed="0")


class Preprocess(keras.layers.Layer):
    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        self.config = config

    def call(self, images):
        return A.preprocess(images, self.config)


def test_augmenter_and_preprocess_inside_compiled_predict():
    """model.predict traces and compiles the call (tf.function / jax.jit)."""
    cfg = view_config("simclr", "cifar10")
    clean_cfg = dataclasses.replace(cfg, size=(40, 40))
    inputs = keras.Input((32, 32, 3), dtype="uint8")
    augmenter = A.Augmenter(cfg, seed=0)
    model = keras.Model(inputs, [augmenter(inputs), augmenter(inputs),
                                 Preprocess(clean_cfg)(inputs)])
    x = uint8_images(2, 32, 32, 3)
    v1, v2, clean = model.predict(x, batch_size=2, verbose=0)
    w1, _, _ = model.predict(x, batch_size=2, verbose=0)
    assert v1.shape == (2, 32, 32, 3) and v1.dtype == np.float32 and np.isfinite(v1).all()
    assert np.abs(v1 - v2).max() > 0.1  # two views differ
    assert np.abs(v1 - w1).max() > 0.1  # the seed state advances between compiled calls
    np.testing.assert_allclose(clean, np_(A.preprocess(x, clean_cfg)), atol=1e-5)
    assert clean.shape == (2, 40, 40, 3)
