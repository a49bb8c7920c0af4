"""Tests for mixem_tf.backbones: architecture sizes, settings (docs/METHODS.md §5.4, §5.5),
PyTorch-aligned padding, serialisation and input checks. Backend-neutral (no TensorFlow)."""

import math

import keras
import numpy as np
import pytest

from mixem_tf.backbones import (
    BasicBlock,
    PatchConv2D,
    ResNetStem,
    build_backbone,
    resolve_stem,
)

pytestmark = pytest.mark.core

# torchvision reference sizes (parameters only; BN buffers are not parameters).
TORCHVISION_RESNET18 = 11_689_512
TORCHVISION_RESNET34 = 21_797_672
TORCHVISION_FC = 512 * 1000 + 1000  # 513,000
STEM_7X7_RGB = 7 * 7 * 3 * 64  # 9,408
STEM_3X3_RGB = 3 * 3 * 3 * 64  # 1,728
BN_SCALE = 1.0 / math.sqrt(1.0 + 1e-5)  # inference-mode BN with fresh statistics


def trainable_count(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def resnet_trunk_params(blocks, stem, channels=3, width=64):
    """Trainable parameters of a torchvision-style ResNet without fc, counted by hand."""
    kernel = 3 if stem == "cifar" else 7
    total = kernel * kernel * channels * width + 2 * width  # stem conv + BN gamma/beta
    in_ch = width
    for stage, num_blocks in enumerate(blocks):
        filters = width * 2**stage
        for index in range(num_blocks):
            strides = 2 if stage > 0 and index == 0 else 1
            total += 9 * in_ch * filters + 2 * filters + 9 * filters * filters + 2 * filters
            if strides != 1 or in_ch != filters:
                total += in_ch * filters + 2 * filters  # 1x1 downsample conv + BN
            in_ch = filters
    return total


def walk(layer):
    """The layer and every layer nested in it (model layers, custom-layer attributes)."""
    seen = set()
    stack = [layer]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        if isinstance(current, keras.Model):
            stack.extend(current.layers)
        else:
            stack.extend(v for v in vars(current).values() if isinstance(v, keras.layers.Layer))


# Tests reuse the width-64 kernel shapes where they can: under JAX every new weight shape
# compiles its own random-normal kernel at build time, which dominates the runtime on CPU.


@pytest.fixture(scope="module")
def resnet18_cifar():
    keras.utils.set_random_seed(0)
    return build_backbone("resnet18", (32, 32, 3))  # automatic stem: cifar


@pytest.fixture(scope="module")
def resnet18_imagenet():
    return build_backbone("resnet18", (96, 96, 3))  # automatic stem: imagenet


# --------------------------------------------------------------------------- sizes


def test_resnet18_cifar_count_and_shape(resnet18_cifar):
    expected = TORCHVISION_RESNET18 - TORCHVISION_FC - STEM_7X7_RGB + STEM_3X3_RGB
    assert expected == 11_168_832 == resnet_trunk_params((2, 2, 2, 2), "cifar")
    assert trainable_count(resnet18_cifar) == expected
    assert resnet18_cifar.output_shape == (None, 512)
    out = resnet18_cifar(np.random.rand(1, 32, 32, 3).astype("float32"), training=False)
    assert tuple(out.shape) == (1, 512)
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(out)))


def test_resnet18_imagenet_count_and_shape(resnet18_imagenet):
    model = resnet18_imagenet
    expected = TORCHVISION_RESNET18 - TORCHVISION_FC
    assert expected == 11_176_512 == resnet_trunk_params((2, 2, 2, 2), "imagenet")
    assert trainable_count(model) == expected
    out = model(np.random.rand(1, 96, 96, 3).astype("float32"), training=False)
    assert tuple(out.shape) == (1, 512)


@pytest.mark.parametrize("stem", ["cifar", "imagenet"])
def test_resnet34_counts(stem):
    size = 32 if stem == "cifar" else 96
    model = build_backbone("resnet34", (size, size, 3), stem=stem)
    expected = TORCHVISION_RESNET34 - TORCHVISION_FC
    if stem == "cifar":
        expected += STEM_3X3_RGB - STEM_7X7_RGB
    assert expected == resnet_trunk_params((3, 4, 6, 3), stem)
    assert expected == (21_276_992 if stem == "cifar" else 21_284_672)
    assert trainable_count(model) == expected
    assert model.output_shape == (None, 512)


def test_resnet18_grey_input():
    model = build_backbone("resnet18", (32, 32, 1))
    assert trainable_count(model) == 11_168_832 - STEM_3X3_RGB + 3 * 3 * 1 * 64
    assert trainable_count(model) == resnet_trunk_params((2, 2, 2, 2), "cifar", channels=1)
    out = model(np.random.rand(1, 32, 32, 1).astype("float32"), training=False)
    assert tuple(out.shape) == (1, 512)


@pytest.mark.parametrize("size", [28, 8])
def test_convnet_shapes_and_count(size):
    model = build_backbone("convnet", (size, size, 1))
    # 3x3 convs 1->32->64->128->128 without bias, plus BN gamma/beta.
    convs = 9 * (1 * 32 + 32 * 64 + 64 * 128 + 128 * 128)
    assert trainable_count(model) == convs + 2 * (32 + 64 + 128 + 128)
    assert trainable_count(model) == 240_608
    assert model.output_shape == (None, 128)
    x = np.random.rand(1, size, size, 1).astype("float32")
    modes = (False, True) if size == 8 else (False,)  # batch size 1 trains too (8x8: cheap)
    for training in modes:
        out = keras.ops.convert_to_numpy(model(x, training=training))
        assert out.shape == (1, 128) and np.all(np.isfinite(out))
    # Pooling adapts: 28 -> 14 -> 7 and 8 -> 4 -> 2 before the global average pool.
    last = model.get_layer("block4_relu").output.shape
    assert tuple(last[1:3]) == ((7, 7) if size == 28 else (2, 2))


def test_convnet_width():
    model = build_backbone("convnet", (28, 28, 3), width=64)
    assert model.output_shape == (None, 256)
    convs = 9 * (3 * 64 + 64 * 128 + 128 * 256 + 256 * 256)
    assert trainable_count(model) == convs + 2 * (64 + 128 + 256 + 256) == 961_600


# --------------------------------------------------------------------------- settings (§5.4)


def test_bn_and_initializer_settings(resnet18_cifar):
    layers = list(walk(resnet18_cifar))
    convs = [layer for layer in layers if isinstance(layer, keras.layers.Conv2D)]
    bns = [layer for layer in layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(convs) == len(bns) == 1 + 16 + 3  # stem, 8 blocks x 2, 3 downsample shortcuts
    for bn in bns:
        assert bn.momentum == 0.9 and bn.epsilon == 1e-5
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(bn.gamma), 1.0)
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(bn.beta), 0.0)
    for conv in convs:
        assert not conv.use_bias and conv.bias is None
        init = conv.kernel_initializer.get_config()
        assert isinstance(conv.kernel_initializer, keras.initializers.VarianceScaling)
        settings = (init["scale"], init["mode"], init["distribution"])
        assert settings == (2.0, "fan_out", "untruncated_normal")


@pytest.mark.parametrize("layer_name, conv_name, tolerance", [
    ("stem", "conv1", 0.10),  # 3x3x3x64: 1,728 weights
    ("layer4_1", "conv2", 0.01),  # 3x3x512x512: 2.4M weights
])
def test_conv_init_std(resnet18_cifar, layer_name, conv_name, tolerance):
    conv = getattr(resnet18_cifar.get_layer(layer_name), conv_name)
    kernel = keras.ops.convert_to_numpy(conv.kernel)
    k, c_out = kernel.shape[0], kernel.shape[-1]
    std = math.sqrt(2.0 / (k * k * c_out))
    assert abs(kernel.std() / std - 1.0) < tolerance
    assert abs(kernel.mean()) < 4 * std / math.sqrt(kernel.size)
    if kernel.size > 1e6:  # untruncated: a normal has ~0.27% of its mass beyond 3 std
        assert np.abs(kernel).max() > 3 * std


# --------------------------------------------------------------------------- stems (§5.5)


def test_auto_stem(resnet18_cifar, resnet18_imagenet):
    assert resolve_stem((32, 32, 3)) == "cifar"
    assert resolve_stem((64, 64, 3)) == "cifar"
    assert resolve_stem((65, 32, 3)) == "imagenet"
    assert resolve_stem((96, 96, 3)) == "imagenet"
    assert resolve_stem((224, 224, 3)) == "imagenet"
    assert resolve_stem((96, 96, 3), "cifar") == "cifar"
    assert resnet18_cifar.get_layer("stem").kind == "cifar"
    assert resnet18_cifar.name == "resnet18_cifar"
    assert resnet18_imagenet.get_layer("stem").kind == "imagenet"
    assert resnet18_imagenet.name == "resnet18_imagenet"


def test_model_name():
    assert build_backbone("convnet", (8, 8, 1), model_name="teacher").name == "teacher"


# --------------------------------------------------------------------------- padding alignment


def _set_kernel(conv, value):
    conv.kernel.assign(np.broadcast_to(value, conv.kernel.shape).astype("float32"))


def test_imagenet_stem_symmetric_padding():
    """7x7/2 conv (pad 3) + 3x3/2 max-pool (pad 1) on an all-ones 8x8x3 image, all-ones kernel.

    PyTorch: conv output row i sees input rows 2i-3..2i+3, i.e. 4, 6, 7, 5 real rows for
    i = 0..3 (Keras "same" would pad 2/3 and give 5, 7, 6, 4), so conv[i, j] = 3 r_i r_j.
    Pool row 0 sees conv rows {0, 1} -> max 6, pool row 1 sees {1, 2, 3} -> max 7.
    """
    stem = ResNetStem("imagenet")
    stem.build((None, 8, 8, 3))
    _set_kernel(stem.conv1, 1.0)
    out = keras.ops.convert_to_numpy(stem(np.ones((1, 8, 8, 3), "float32"), training=False))
    expected = 3.0 * np.array([[36.0, 42.0], [42.0, 49.0]]) * BN_SCALE
    assert out.shape == (1, 2, 2, 64)
    np.testing.assert_allclose(out[0], np.repeat(expected[:, :, None], 64, axis=-1), rtol=1e-5)


def test_cifar_stem_padding():
    stem = ResNetStem("cifar")
    stem.build((None, 4, 4, 1))
    _set_kernel(stem.conv1, 1.0)
    out = keras.ops.convert_to_numpy(stem(np.ones((1, 4, 4, 1), "float32"), training=False))
    rows = np.array([2.0, 3.0, 3.0, 2.0])
    assert out.shape == (1, 4, 4, 64)
    np.testing.assert_allclose(out[0, :, :, 5], np.outer(rows, rows) * BN_SCALE, rtol=1e-5)


def test_basic_block_stride2_symmetric_padding():
    """3x3/2 conv (pad 1) on all-ones 8x8: row i sees rows 2i-1..2i+1 -> 2, 3, 3, 3 real rows.

    Keras "same" would pad 0 before / 1 after and give 3, 3, 3, 2 instead. The block is
    layer2_0 of a ResNet (64 -> 128 channels); conv1 sums all 64 input channels, conv2 is
    the identity and the shortcut is switched off.
    """
    block = BasicBlock(128, strides=2, downsample=True)
    block.build((None, 8, 8, 64))
    _set_kernel(block.conv1, 1.0)
    identity = np.zeros((3, 3, 128, 128), "float32")
    identity[1, 1] = np.eye(128)
    block.conv2.kernel.assign(identity)
    _set_kernel(block.downsample_conv, 0.0)
    out = keras.ops.convert_to_numpy(block(np.ones((1, 8, 8, 64), "float32"), training=False))
    rows = np.array([2.0, 3.0, 3.0, 3.0])
    assert out.shape == (1, 4, 4, 128)
    np.testing.assert_allclose(out[0, :, :, 7], 64 * np.outer(rows, rows) * BN_SCALE**2, rtol=1e-5)

    # The 1x1/2 shortcut samples even rows/columns (0, 2, 4, 6), as PyTorch does.
    _set_kernel(block.conv1, 0.0)
    _set_kernel(block.downsample_conv, 1.0 / 64)
    ramp = np.arange(64, dtype="float32").reshape(1, 8, 8, 1)  # x[h, w] = 8h + w
    out = keras.ops.convert_to_numpy(block(np.repeat(ramp, 64, axis=-1), training=False))
    expected = 16.0 * np.arange(4)[:, None] + 2.0 * np.arange(4)[None, :]
    np.testing.assert_allclose(out[0, :, :, 7], expected * BN_SCALE, rtol=1e-5)


def _torch_conv(x, kernel, stride, pad):
    """Cross-correlation with PyTorch's symmetric zero padding; x NHWC, kernel HWIO."""
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    kh, kw = kernel.shape[:2]
    ho = (x.shape[1] - kh) // stride + 1
    wo = (x.shape[2] - kw) // stride + 1
    out = 0.0
    for i in range(kh):
        for j in range(kw):
            window = x[:, i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride]
            out = out + window @ kernel[i, j]
    return out


def _torch_maxpool(x):
    """3x3/2 max-pool padded with -inf, as torch.nn.MaxPool2d(3, 2, padding=1)."""
    x = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
    ho = (x.shape[1] - 3) // 2 + 1
    wo = (x.shape[2] - 3) // 2 + 1
    windows = [x[:, i:i + 2 * (ho - 1) + 1:2, j:j + 2 * (wo - 1) + 1:2]
               for i in range(3) for j in range(3)]
    return np.max(windows, axis=0)


def test_stem_and_block_match_pytorch_reference():
    """Random weights and inputs against a NumPy re-statement of torchvision's forward pass."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 10, 10, 3)).astype("float32")
    stem = ResNetStem("imagenet")
    block = BasicBlock(128, strides=2, downsample=True)
    stem_out = stem(x, training=False)
    out = keras.ops.convert_to_numpy(block(stem_out, training=False))
    stem_out = keras.ops.convert_to_numpy(stem_out)

    def kernel(conv):
        return keras.ops.convert_to_numpy(conv.kernel).astype("float64")

    ref = _torch_conv(x.astype("float64"), kernel(stem.conv1), 2, 3) * BN_SCALE
    ref = _torch_maxpool(np.maximum(ref, 0))
    np.testing.assert_allclose(stem_out, ref, rtol=1e-4, atol=1e-5)
    h = np.maximum(_torch_conv(ref, kernel(block.conv1), 2, 1) * BN_SCALE, 0)
    h = _torch_conv(h, kernel(block.conv2), 1, 1) * BN_SCALE
    shortcut = _torch_conv(ref, kernel(block.downsample_conv), 2, 0) * BN_SCALE
    np.testing.assert_allclose(out, np.maximum(h + shortcut, 0), rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------- serialisation


@pytest.mark.parametrize("name, shape, kwargs", [
    ("resnet18", (8, 8, 3), {}),  # smallest input; the width-64 kernel shapes are compiled
    ("convnet", (8, 8, 1), {}),
])
def test_keras_round_trip(tmp_path, name, shape, kwargs):
    model = build_backbone(name, shape, **kwargs)
    x = np.random.default_rng(1).normal(size=(3,) + shape).astype("float32")
    model(x, training=True)  # move the BN statistics away from their initial values
    moving = [w for w in model.non_trainable_weights if "moving_mean" in w.path]
    assert moving and any(np.abs(keras.ops.convert_to_numpy(w)).max() > 0 for w in moving)
    path = tmp_path / "backbone.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.name == model.name
    assert trainable_count(loaded) == trainable_count(model)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(x, training=False)),
        keras.ops.convert_to_numpy(model(x, training=False)),
        rtol=1e-6, atol=1e-6,
    )


def test_custom_layer_configs():
    stem = ResNetStem.from_config(ResNetStem("imagenet", filters=16, name="s").get_config())
    assert (stem.kind, stem.filters, stem.name) == ("imagenet", 16, "s")
    block = BasicBlock.from_config(BasicBlock(32, strides=2, downsample=True).get_config())
    assert (block.filters, block.strides, block.downsample) == (32, 2, True)
    assert block.bn_momentum == 0.9 and block.bn_epsilon == 1e-5


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("args, kwargs, message", [
    (("resnet50", (32, 32, 3)), {},
     "Unknown backbone 'resnet50'; valid names: convnet, resnet18, resnet34"),
    (("resnet18", (32, 32, 3)), {"stem": "tiny"}, "Unknown stem 'tiny'"),
    (("convnet", (28, 28, 1)), {"stem": "cifar"}, "no stem option"),
    (("resnet18", (4, 4, 3)), {}, "too small for resnet18 with the cifar stem"),
    (("resnet34", (16, 16, 3)), {"stem": "imagenet"}, "at least 32 px"),
    (("convnet", (2, 8, 1)), {}, "too small for the convnet"),
    (("resnet18", (32, 32)), {}, "input_shape must be"),
    (("resnet18", (None, None, 3)), {"stem": "cifar"}, "input_shape must be"),
    (("convnet", (28, 28, 1)), {"width": 0}, "width must be"),
])
def test_errors(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_backbone(*args, **kwargs)


def test_block_errors():
    with pytest.raises(ValueError, match="strides must be 1 or 2"):
        BasicBlock(64, strides=3)
    with pytest.raises(ValueError, match="downsample=True"):
        BasicBlock(64, strides=2).build((None, 8, 8, 64))
    with pytest.raises(ValueError, match="Unknown stem"):
        ResNetStem("resnet")


@pytest.mark.parametrize("size,channels,filters,kernel,padding,strides", [
    (2, 8, 6, 3, "same", 1), (5, 3, 4, 3, "same", 1), (6, 2, 3, 2, "same", 1),  # the ConvNet's
    (10, 3, 4, 3, "valid", 1), (10, 3, 4, 3, "valid", 2), (9, 4, 5, 3, "valid", 2),  # ResNet's
    (8, 4, 5, 1, "valid", 2), (13, 3, 4, 7, "valid", 2)])  # shortcut, ImageNet stem
def test_patch_conv_equals_conv2d(size, channels, filters, kernel, padding, strides):
    """PatchConv2D (im2col under JAX on a CPU) computes Conv2D's conv, values and grads."""
    rng = np.random.default_rng(0)
    images = rng.normal(size=(3, size, size, channels)).astype("float32")
    weights = rng.normal(size=(kernel, kernel, channels, filters)).astype("float32")
    layers = [cls(filters, kernel, padding=padding, strides=strides, use_bias=False)
              for cls in (keras.layers.Conv2D, PatchConv2D)]
    for layer in layers:
        layer.build(images.shape)
        layer.kernel.assign(weights)
    if keras.backend.backend() == "jax":
        import jax

        assert layers[1]._use_patches() == (jax.default_backend() == "cpu")
        grads = [jax.grad(lambda x, w, layer=layer: (layer.convolution_op(x, w) ** 3).sum(),
                          argnums=(0, 1))(images, weights) for layer in layers]
        for expected, got in zip(*grads):  # float32 sums of terms up to ~1e3: scaled atol
            np.testing.assert_allclose(got, expected, rtol=1e-4,
                                       atol=1e-6 * np.abs(expected).max())
    else:
        assert not layers[1]._use_patches()
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layers[1](images)),
                               keras.ops.convert_to_numpy(layers[0](images)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("stem", ["cifar", "imagenet"])
def test_a_resnet_trains_the_same_with_im2col_convs(stem, monkeypatch):
    """ResNet-18's features and gradients in training mode are those of XLA's convolutions
    when its convs run as im2col (JAX on a CPU; elsewhere both paths are the same conv)."""
    size = 16 if stem == "cifar" else 32
    model = build_backbone("resnet18", (size, size, 3), stem=stem, width=8)
    images = np.random.default_rng(1).normal(size=(4, size, size, 3)).astype("float32")

    def features_and_grads():
        if keras.backend.backend() != "jax":
            return keras.ops.convert_to_numpy(model(images, training=True)), []
        import jax

        def loss(values):
            mapping = list(zip(model.trainable_variables, values))
            with keras.StatelessScope(state_mapping=mapping):
                h = model(images, training=True)
            return (h ** 2).sum(), h

        (_, h), grads = jax.value_and_grad(loss, has_aux=True)(
            [v.value for v in model.trainable_variables])
        return np.asarray(h), [np.asarray(g) for g in grads]

    h, grads = features_and_grads()
    monkeypatch.setattr(PatchConv2D, "_use_patches", lambda self: False)
    expected_h, expected_grads = features_and_grads()
    # training-mode BN over 4 images on 1x1 maps amplifies float32 rounding: atol 1e-4
    np.testing.assert_allclose(h, expected_h, rtol=1e-4, atol=1e-4)
    for got, expected in zip(grads, expected_grads):
        np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-4 * np.abs(expected).max())
