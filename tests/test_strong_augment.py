"""The strong views (RandAugment-style ops + cutout) against PIL, their ranges and their
determinism per seed, on the current backend (CI runs this file under TensorFlow and JAX)."""

import numpy as np
import pytest
from keras import ops
from PIL import Image, ImageEnhance, ImageOps

from mixem_tf.augment import AugmentConfig
from mixem_tf.augment.strong import (STRONG_OPS, StrongAugmenter, affine_nearest, autocontrast,
                                     brightness_blend, color_blend, contrast_blend, cutout,
                                     equalize, posterize, sharpness_blend, solarize)

pytestmark = pytest.mark.core

RNG = np.random.default_rng(11)
IMAGES = RNG.integers(0, 256, (3, 12, 10, 3)).astype(np.uint8)
IMAGES[1] //= 3                                      # fewer levels: equalize and autocontrast act
IMAGES[2, :6] = 200                                  # a flat half


def _ours(op, *args):
    out = op(IMAGES.astype(np.float32) / 255.0, *args)
    return np.round(ops.convert_to_numpy(out) * 255.0)


def _pil(function, values=(None, None, None)):
    return np.stack([np.asarray(function(Image.fromarray(image), value))
                     for image, value in zip(IMAGES, values)]).astype(np.float64)


@pytest.mark.parametrize("name, ours, theirs", [
    ("autocontrast", lambda: _ours(autocontrast), lambda: _pil(lambda i, _: ImageOps.autocontrast(i))),
    ("equalize", lambda: _ours(equalize), lambda: _pil(lambda i, _: ImageOps.equalize(i))),
    ("solarize", lambda: _ours(solarize, np.array([100.0, 0.0, 255.5])),
     lambda: _pil(lambda i, v: ImageOps.solarize(i, v), (100, 0, 255.5))),
    ("posterize", lambda: _ours(posterize, np.array([4.0, 5.0, 7.9])),
     lambda: _pil(lambda i, v: ImageOps.posterize(i, v), (4, 5, 7))),
])
def test_lookup_table_ops_equal_pil_exactly(name, ours, theirs):
    np.testing.assert_array_equal(ours(), theirs(), err_msg=name)


@pytest.mark.parametrize("op, enhancer", [(color_blend, ImageEnhance.Color),
                                          (contrast_blend, ImageEnhance.Contrast),
                                          (brightness_blend, ImageEnhance.Brightness),
                                          (sharpness_blend, ImageEnhance.Sharpness)])
def test_enhance_ops_equal_pil_within_one_level(op, enhancer):
    factors = np.array([0.05, 0.5, 0.95], np.float32)
    expected = _pil(lambda i, v: enhancer(i).enhance(float(v)), factors)
    assert np.abs(_ours(op, factors) - expected).max() <= 1


def test_affine_ops_equal_pil_rotate_shear_and_translate():
    angle, shear, shift = 17.0, 0.1, -0.1
    matrices = []
    for image in IMAGES:
        h, w = image.shape[:2]
        a = -np.deg2rad(angle)
        c, s = np.cos(a), np.sin(a)
        matrices.append([c, s, c * -w / 2 + s * -h / 2 + w / 2,
                         -s, c, -s * -w / 2 + c * -h / 2 + h / 2])
    got = _ours(affine_nearest, np.array(matrices, np.float32))
    expected = _pil(lambda i, _: i.rotate(angle))
    assert np.mean(got != expected) < 0.02                 # pixel-centre rounding at edges
    got = _ours(affine_nearest, np.tile([[1, shear, shift * 10, 0, 1, 0]], (3, 1)))
    expected = _pil(lambda i, _: i.transform(i.size, Image.AFFINE,
                                             (1, shear, shift * 10, 0, 1, 0)))
    np.testing.assert_array_equal(got, expected)


def test_cutout_zeroes_the_clipped_square():
    x = np.ones((2, 8, 8, 1), np.float32)
    out = ops.convert_to_numpy(cutout(x, np.array([4.0, 5.0]), np.array([0.0, 4.0]),
                                      np.array([3.0, 7.0])))
    expected = np.ones_like(x)
    expected[0, 0:2, 1:5] = 0          # rows [-2, 2) clipped, columns [1, 5)
    expected[1, 2:6, 5:8] = 0          # side 5 → half 2: rows [2, 6), columns [5, 9) clipped
    np.testing.assert_array_equal(out, expected)


def _augmenter(seed, **kwargs):
    return StrongAugmenter(AugmentConfig(size=(12, 10), mean=(0.5,), std=(0.25,)), seed=seed,
                           **kwargs)


def test_views_are_normalised_images_with_one_hole_and_repeat_per_seed():
    batch = np.repeat(IMAGES, 20, axis=0)
    first = ops.convert_to_numpy(_augmenter(3)(batch))
    again = ops.convert_to_numpy(_augmenter(3)(batch))
    other = ops.convert_to_numpy(_augmenter(4)(batch))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert first.shape == (60, 12, 10, 3) and first.dtype == np.float32
    levels = first * 0.25 + 0.5                     # back to [0, 1]: on the uint8 grid or a hole
    hole = first == 0.0
    assert np.all((levels >= -1e-6) & (levels <= 1 + 1e-6))
    np.testing.assert_allclose(np.round(levels * 255)[~hole], (levels * 255)[~hole], atol=1e-3)
    side = np.sqrt(hole.all(axis=-1).sum(axis=(1, 2)))
    assert side.max() <= 5 + 1e-6                   # at most half the shorter side (10 px)
    different = np.mean(np.abs(first - (IMAGES[np.arange(60) // 20] / 255.0 - 0.5) / 0.25) > 1e-3)
    assert different > 0.2                          # the views really change the images


def test_no_ops_and_no_cutout_leave_only_the_flip():
    config = AugmentConfig(size=(12, 10), flip=False)
    out = StrongAugmenter(config, num_ops=0, cutout_fraction=0.0, seed=0)(IMAGES)
    np.testing.assert_allclose(ops.convert_to_numpy(out), IMAGES / 255.0, atol=1e-6)
    with pytest.raises(ValueError, match="num_ops"):
        StrongAugmenter(config, num_ops=-1)
    assert len(STRONG_OPS) == 14


def test_the_view_saves_with_its_settings():
    import keras

    layer = _augmenter(5, num_ops=2, cutout_fraction=0.25)
    restored = keras.layers.deserialize(keras.layers.serialize(layer))
    assert (restored.num_ops, restored.cutout_fraction, restored.seed) == (2, 0.25, 5)
