"""Backbones: ResNet-18/34 with CIFAR or ImageNet stems, and a small ConvNet for CPU runs.

Each backbone is a functional ``keras.Model`` mapping float32 images ``[N, H, W, C]``
(channels last, C = 1 or 3) to features ``[N, D]`` after global average pooling.

* ``resnet18``: torchvision ResNet-18 without fc, BasicBlock [2, 2, 2, 2], D = 8 * width = 512.
  MIX'EM's backbone (docs/METHODS.md §1.1).
* ``resnet34``: BasicBlock [3, 4, 6, 3], D = 512. MiCE's and cdec's backbone
  (docs/METHODS.md §2.1, §3.1).
* ``convnet``: four conv-BN-ReLU layers (32, 64, 128, 128 channels at the default width 32)
  with 2x2 max-pools after the first two, D = 4 * width = 128 (256 at width 64). Made for fast
  CPU runs on 28x28 (MNIST, Fashion-MNIST) and 8x8 (digits) inputs; 240,608 trainable
  parameters for one input channel (241,184 for RGB; 960,448 at width 64), about 15M
  multiply-adds per 28x28 image. Its 2x2 max-pools are skipped once the map is under 4 px,
  so 28 -> 14 -> 7 and 8 -> 4 -> 2 before the global average pool.

Settings (docs/METHODS.md §5.4): convs have no bias and use
``VarianceScaling(2.0, mode="fan_out", distribution="untruncated_normal")``, i.e.
N(0, sqrt(2 / (k*k*C_out))) as torchvision's ``kaiming_normal_(mode="fan_out")``; BN uses
``momentum=0.9, epsilon=1e-5`` (PyTorch's momentum 0.1 and eps 1e-5), gamma 1 and beta 0.

Padding: every ResNet conv and the stem max-pool pad symmetrically like PyTorch
(``padding=k // 2``) through an explicit pad followed by a "valid" conv. Keras' "same" padding
with stride 2 on an even-sized input pads only the bottom/right (7x7: 2 before, 3 after), which
shifts every stride-2 sampling grid by one pixel relative to torchvision and would make
ported PyTorch weights and our reference numbers disagree.

Example::

    backbone = build_backbone("resnet18", input_shape=(32, 32, 3))   # CIFAR stem (auto)
    features = backbone(images)                                       # [N, 512]
"""

import keras
from keras import ops

__all__ = [
    "BasicBlock",
    "PatchConv2D",
    "ResNetStem",
    "backbone_names",
    "build_backbone",
    "resolve_stem",
]

BN_MOMENTUM = 0.9  # docs/METHODS.md §5.4: PyTorch BN momentum 0.1
BN_EPSILON = 1e-5  # docs/METHODS.md §5.4: PyTorch BN eps
AUTO_STEM_MAX_SIZE = 64  # inputs up to this many pixels get the CIFAR stem (docs/METHODS.md §5.5)

_RESNET_BLOCKS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}
_NAMES = ("convnet", "resnet18", "resnet34")
_STEMS = ("cifar", "imagenet")
# Smallest input side per architecture: the total stride of the network, so that the last
# stage still sees at least one real pixel rather than only padding.
_MIN_SIZE = {"cifar": 8, "imagenet": 32, "convnet": 4}


def backbone_names():
    """The names ``build_backbone`` accepts."""
    return _NAMES


def _conv_initializer():
    """Kaiming-normal, fan_out, untruncated: torchvision's ResNet conv init (docs/METHODS.md
    §5.4)."""
    return keras.initializers.VarianceScaling(
        scale=2.0, mode="fan_out", distribution="untruncated_normal"
    )


def _conv(filters, kernel_size, strides=1, padding="valid", name=None):
    return PatchConv2D(
        filters,
        kernel_size,
        strides=strides,
        padding=padding,
        data_format="channels_last",
        use_bias=False,
        kernel_initializer=_conv_initializer(),
        name=name,
    )


@keras.saving.register_keras_serializable("mixem_tf")
class PatchConv2D(keras.layers.Conv2D):
    """Conv2D that, under JAX on a CPU, computes the convolution as one matrix product over
    gathered patches (im2col): stride-1 "same" convs (the ConvNet) and "valid" convs of any
    stride (ResNet's, whose input is padded first).

    Same weights and same function as Conv2D; only the computation differs. XLA's CPU
    convolution is slow: im2col is 1.3-3x faster for ResNet-18's 3x3 convs (forward and
    backward) and ~12x for the ConvNet's small maps (docs/BENCHMARKS.md). TensorFlow's and GPU
    convolutions are used as they are.
    """

    def _use_patches(self):
        if keras.backend.backend() != "jax":
            return False
        import jax

        return (jax.default_backend() == "cpu" and tuple(self.dilation_rate) == (1, 1)
                and self.groups == 1 and self.data_format == "channels_last"
                and (self.padding == "valid" or tuple(self.strides) == (1, 1)))

    def convolution_op(self, inputs, kernel):
        if not self._use_patches():
            return super().convolution_op(inputs, kernel)
        kh, kw, channels, filters = kernel.shape
        if self.padding == "same":
            before_h, before_w = (kh - 1) // 2, (kw - 1) // 2
            inputs = ops.pad(inputs, [[0, 0], [before_h, kh - 1 - before_h],
                                      [before_w, kw - 1 - before_w], [0, 0]])
        sh, sw = self.strides
        height = (inputs.shape[1] - kh) // sh + 1
        width = (inputs.shape[2] - kw) // sw + 1
        patches = ops.concatenate([
            inputs[:, i:i + sh * (height - 1) + 1:sh, j:j + sw * (width - 1) + 1:sw, :]
            for i in range(kh) for j in range(kw)], axis=-1)
        return ops.matmul(patches, ops.reshape(kernel, (kh * kw * channels, filters)))


def _bn(momentum, epsilon, name=None):
    return keras.layers.BatchNormalization(
        axis=-1,
        momentum=momentum,
        epsilon=epsilon,
        beta_initializer="zeros",
        gamma_initializer="ones",
        name=name,
    )


def _pad(x, pad):
    """Symmetric zero padding of H and W by ``pad`` pixels, as PyTorch's ``padding=pad``."""
    if pad == 0:
        return x
    return ops.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]])


def _padded_size(size, kernel, stride, pad):
    """PyTorch's output size: floor((size + 2 pad - kernel) / stride) + 1."""
    if size is None:
        return None
    return (size + 2 * pad - kernel) // stride + 1


@keras.saving.register_keras_serializable("mixem_tf")
class ResNetStem(keras.layers.Layer):
    """The ResNet stem (docs/METHODS.md §1.1, §2.1, §5.5).

    Attributes:
        kind: ``"cifar"``: 3x3 stride-1 conv, BN, ReLU, no max-pool (32-px CIFAR models of
            MIX'EM and MiCE). ``"imagenet"``: torchvision's 7x7 stride-2 conv (padding 3), BN,
            ReLU, 3x3 stride-2 max-pool (padding 1); used at 96 px (STL-10) and 224 px.
        filters: output channels, 64 in torchvision.
        bn_momentum, bn_epsilon: BatchNormalization settings (docs/METHODS.md §5.4).

    The max-pool pads with zeros; torchvision pads with -inf, but the pool follows a ReLU
    and every 3x3 window holds at least one real (non-negative) value, so the result is
    identical.

    Raises:
        ValueError: for an unknown ``kind``.
    """

    def __init__(self, kind="cifar", filters=64, bn_momentum=BN_MOMENTUM, bn_epsilon=BN_EPSILON,
                 **kwargs):
        super().__init__(**kwargs)
        if kind not in _STEMS:
            raise ValueError(f"Unknown stem {kind!r}; valid stems: {', '.join(_STEMS)}.")
        self.kind = kind
        self.filters = int(filters)
        self.bn_momentum = bn_momentum
        self.bn_epsilon = bn_epsilon
        self.kernel_size, self.strides = (3, 1) if kind == "cifar" else (7, 2)
        self.conv1 = _conv(self.filters, self.kernel_size, self.strides, name="conv1")
        self.bn1 = _bn(bn_momentum, bn_epsilon, name="bn1")
        self.maxpool = None
        if kind == "imagenet":
            self.maxpool = keras.layers.MaxPooling2D(
                pool_size=3, strides=2, padding="valid", data_format="channels_last",
                name="maxpool",
            )

    def build(self, input_shape):
        self.conv1.build((None, None, None, input_shape[-1]))
        self.bn1.build((None, None, None, self.filters))
        if self.maxpool is not None:
            self.maxpool.build((None, None, None, self.filters))

    def call(self, inputs, training=None):
        x = self.conv1(_pad(inputs, self.kernel_size // 2))
        x = ops.relu(self.bn1(x, training=training))
        if self.maxpool is not None:
            x = self.maxpool(_pad(x, 1))
        return x

    def compute_output_shape(self, input_shape):
        n, h, w, _ = input_shape
        h = _padded_size(h, self.kernel_size, self.strides, self.kernel_size // 2)
        w = _padded_size(w, self.kernel_size, self.strides, self.kernel_size // 2)
        if self.maxpool is not None:
            h, w = _padded_size(h, 3, 2, 1), _padded_size(w, 3, 2, 1)
        return (n, h, w, self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(kind=self.kind, filters=self.filters, bn_momentum=self.bn_momentum,
                      bn_epsilon=self.bn_epsilon)
        return config


@keras.saving.register_keras_serializable("mixem_tf")
class BasicBlock(keras.layers.Layer):
    """torchvision's ResNet BasicBlock (docs/METHODS.md §1.1, §2.1).

    ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))`` with 3x3 convs padded by 1 on
    every side; conv1 carries the stride. The shortcut is the identity, or, with
    ``downsample=True``, a 1x1 conv of the same stride followed by BN (torchvision's
    ``downsample``). Sub-layer names follow torchvision's state-dict keys.

    Attributes:
        filters: output channels.
        strides: 1 or 2.
        downsample: project the shortcut; needed when ``strides != 1`` or the input has a
            different number of channels than ``filters``.
        bn_momentum, bn_epsilon: BatchNormalization settings (docs/METHODS.md §5.4).

    Raises:
        ValueError: at build time, when the identity shortcut cannot match the output shape.
    """

    def __init__(self, filters, strides=1, downsample=False, bn_momentum=BN_MOMENTUM,
                 bn_epsilon=BN_EPSILON, **kwargs):
        super().__init__(**kwargs)
        if strides not in (1, 2):
            raise ValueError(f"BasicBlock strides must be 1 or 2, got {strides!r}.")
        self.filters = int(filters)
        self.strides = int(strides)
        self.downsample = bool(downsample)
        self.bn_momentum = bn_momentum
        self.bn_epsilon = bn_epsilon
        self.conv1 = _conv(self.filters, 3, self.strides, name="conv1")
        self.bn1 = _bn(bn_momentum, bn_epsilon, name="bn1")
        self.conv2 = _conv(self.filters, 3, 1, name="conv2")
        self.bn2 = _bn(bn_momentum, bn_epsilon, name="bn2")
        self.downsample_conv = self.downsample_bn = None
        if self.downsample:
            self.downsample_conv = _conv(self.filters, 1, self.strides, name="downsample_conv")
            self.downsample_bn = _bn(bn_momentum, bn_epsilon, name="downsample_bn")

    def build(self, input_shape):
        channels = input_shape[-1]
        if not self.downsample and (self.strides != 1 or channels != self.filters):
            raise ValueError(
                f"BasicBlock {self.name!r}: an identity shortcut needs strides 1 and "
                f"{self.filters} input channels (got strides {self.strides}, {channels} "
                "channels); pass downsample=True."
            )
        self.conv1.build((None, None, None, channels))
        self.bn1.build((None, None, None, self.filters))
        self.conv2.build((None, None, None, self.filters))
        self.bn2.build((None, None, None, self.filters))
        if self.downsample:
            self.downsample_conv.build((None, None, None, channels))
            self.downsample_bn.build((None, None, None, self.filters))

    def call(self, inputs, training=None):
        x = ops.relu(self.bn1(self.conv1(_pad(inputs, 1)), training=training))
        x = self.bn2(self.conv2(_pad(x, 1)), training=training)
        shortcut = inputs
        if self.downsample:
            shortcut = self.downsample_bn(self.downsample_conv(inputs), training=training)
        return ops.relu(x + shortcut)

    def compute_output_shape(self, input_shape):
        n, h, w, _ = input_shape
        return (n, _padded_size(h, 3, self.strides, 1), _padded_size(w, 3, self.strides, 1),
                self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, strides=self.strides, downsample=self.downsample,
                      bn_momentum=self.bn_momentum, bn_epsilon=self.bn_epsilon)
        return config


def resolve_stem(input_shape, stem=None):
    """The ResNet stem for ``input_shape`` (H, W, C) (docs/METHODS.md §5.5).

    ``None`` picks ``"cifar"`` when the larger image side is at most 64 px (CIFAR's 32 px;
    also 64-px inputs such as Tiny-ImageNet) and ``"imagenet"`` above (STL-10's 96 px,
    cdec's 224 px). The 64-px threshold is mixem-tf's choice; the papers only use 32, 96
    and 224 px.
    """
    if stem is None:
        return "cifar" if max(input_shape[0], input_shape[1]) <= AUTO_STEM_MAX_SIZE else "imagenet"
    if stem not in _STEMS:
        raise ValueError(f"Unknown stem {stem!r}; valid stems: {', '.join(_STEMS)} or None "
                         f"(automatic: cifar up to {AUTO_STEM_MAX_SIZE} px, imagenet above).")
    return stem


def _check_input_shape(input_shape):
    shape = tuple(input_shape) if isinstance(input_shape, (tuple, list)) else None
    if (shape is None or len(shape) != 3
            or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape)):
        raise ValueError(
            f"input_shape must be (height, width, channels) of positive ints, got {input_shape!r}."
        )
    return shape


def _check_size(shape, min_size, what):
    if min(shape[0], shape[1]) < min_size:
        raise ValueError(
            f"Input {shape[0]}x{shape[1]} is too small for {what}: both sides must be at least "
            f"{min_size} px."
        )


def _build_resnet(arch, inputs, stem, width, bn_momentum, bn_epsilon):
    x = ResNetStem(stem, filters=width, bn_momentum=bn_momentum, bn_epsilon=bn_epsilon,
                   name="stem")(inputs)
    channels = width
    for stage, num_blocks in enumerate(_RESNET_BLOCKS[arch]):
        filters = width * 2**stage
        for index in range(num_blocks):
            strides = 2 if stage > 0 and index == 0 else 1
            x = BasicBlock(
                filters, strides=strides, downsample=strides != 1 or channels != filters,
                bn_momentum=bn_momentum, bn_epsilon=bn_epsilon,
                name=f"layer{stage + 1}_{index}",
            )(x)
            channels = filters
    return x


def _build_convnet(inputs, width, bn_momentum, bn_epsilon):
    # Stride-1 3x3 "same" convs pad 1 pixel on every side, i.e. symmetric like PyTorch.
    x, size = inputs, min(inputs.shape[1], inputs.shape[2])
    for index, (multiple, pool) in enumerate(((1, True), (2, True), (4, False), (4, False))):
        name = f"block{index + 1}"
        x = _conv(width * multiple, 3, padding="same", name=f"{name}_conv")(x)
        x = _bn(bn_momentum, bn_epsilon, name=f"{name}_bn")(x)
        x = keras.layers.ReLU(name=f"{name}_relu")(x)
        # Pool only while at least 2x2 would remain: 28 -> 14 -> 7, 8 -> 4 -> 2.
        if pool and size >= 4:
            x = keras.layers.MaxPooling2D(2, data_format="channels_last", name=f"{name}_pool")(x)
            size //= 2
    return x


def build_backbone(name, input_shape, *, stem=None, width=None, bn_momentum=BN_MOMENTUM,
                   bn_epsilon=BN_EPSILON, model_name=None):
    """Builds backbone ``name`` for images of ``input_shape`` = (H, W, C).

    Args:
        name: one of ``backbone_names()``: "resnet18", "resnet34", "convnet".
        input_shape: (height, width, channels) of the float32 input images; static sizes.
        stem: ResNets only: "cifar", "imagenet" or None (automatic, see ``resolve_stem``).
        width: base width. ResNets: channels of the stem and first stage (default 64, giving
            D = 8 * width = 512). ConvNet: channels of its first conv (default 32, giving
            D = 4 * width = 128; 64 gives 256).
        bn_momentum, bn_epsilon: BatchNormalization settings; the defaults are PyTorch's
            (docs/METHODS.md §5.4).
        model_name: the Keras model name; default ``"<name>_<stem>"`` or ``"convnet"``. Give
            distinct names to models that are nested in one parent (e.g. student and teacher).

    Returns:
        A functional ``keras.Model`` from images ``[N, H, W, C]`` to features ``[N, D]``.

    Raises:
        ValueError: for an unknown name or stem, a stem given to the ConvNet, a malformed
            input shape or width, or an input smaller than the architecture's minimum
            (ResNet with CIFAR stem 8 px, ImageNet stem 32 px, ConvNet 4 px).
    """
    if name not in _NAMES:
        raise ValueError(f"Unknown backbone {name!r}; valid names: {', '.join(_NAMES)}.")
    shape = _check_input_shape(input_shape)
    if width is not None and (isinstance(width, bool) or not isinstance(width, int) or width < 1):
        raise ValueError(f"width must be a positive int or None, got {width!r}.")
    inputs = keras.Input(shape=shape, dtype="float32", name="images")
    if name == "convnet":
        if stem is not None:
            raise ValueError(f"The convnet backbone has no stem option; got stem={stem!r}. "
                             "Leave stem=None.")
        _check_size(shape, _MIN_SIZE["convnet"], "the convnet")
        x = _build_convnet(inputs, width or 32, bn_momentum, bn_epsilon)
        default_name = "convnet"
    else:
        stem = resolve_stem(shape, stem)
        _check_size(shape, _MIN_SIZE[stem], f"{name} with the {stem} stem")
        x = _build_resnet(name, inputs, stem, width or 64, bn_momentum, bn_epsilon)
        default_name = f"{name}_{stem}"
    features = keras.layers.GlobalAveragePooling2D(data_format="channels_last",
                                                   name="avgpool")(x)
    return keras.Model(inputs, features, name=model_name or default_name)
