"""The view pipelines: `Augmenter` (one augmented view per call) and `preprocess` (the clean
view: resize and normalisation only), from uint8 batches, on the device."""

from __future__ import annotations

from typing import Optional

import keras
from keras import ops

from mixem_tf.augment.config import AugmentConfig, is_int
from mixem_tf.augment.ops import (BLUR_DRAWS, CROP_DRAWS, FLIP_PROB, JITTER_DRAWS,
                                  color_jitter_from_uniform, convert_channels,
                                  gaussian_blur_from_uniform, grayscale_from_uniform, normalize,
                                  resize, resized_crop_from_uniform, to_unit_float, uniform)
from mixem_tf.distributed import replica_info

__all__ = ["Augmenter", "preprocess"]


def _check_config(config):
    if not isinstance(config, AugmentConfig):
        raise ValueError(f"config must be an AugmentConfig, got {type(config).__name__}")


def _prepare(images, config):
    """uint8 (or float in [0, 255]) → float32 in [0, 1] with the config's output channels."""
    x = convert_channels(to_unit_float(images), config.output_channels)
    c = x.shape[-1]
    if len(config.mean) not in (1, c):
        raise ValueError(
            f"the config normalises {len(config.mean)} channels but the batch has {c} "
            f"(input shape {tuple(images.shape)}); use a preset for this dataset or set "
            "output_channels")
    return x


def preprocess(images, config: AugmentConfig):
    """Evaluation path: the same channel conversion, resize and normalisation as the views,
    no randomness (docs/METHODS.md §1.6: evaluation must use the training normalisation).

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
    """Draws one augmented view per call (docs/METHODS.md §1.3 / §2.3 / §3.3, torchvision
    semantics).

    Args:
        config: an :class:`AugmentConfig`, e.g. a method's ``augmentation(dataset)``.
        seed: int or ``None``; one seed gives the same sequence of views.

    The layer owns a ``keras.random.SeedGenerator`` whose state advances on every call (also
    inside ``model.predict`` / a jitted step). It always augments, also with
    ``training=False``; use :func:`preprocess` for clean images.

    Input: uint8 ``[N, H, W, C]`` (or float in ``[0, 255]``), ``C`` 1 or 3, static H, W, C.
    Output: float32 ``[N, h, w, C_out]``, normalised.

    Example:
        >>> augmenter = Augmenter(MixEM.augmentation("cifar10"), seed=0)
        >>> view_a, view_b = augmenter(batch), augmenter(batch)
    """

    def __init__(self, config: AugmentConfig, seed: Optional[int] = None, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if isinstance(config, dict):
            config = AugmentConfig.from_dict(config)
        _check_config(config)
        if seed is not None and not is_int(seed):
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
        widths = (CROP_DRAWS + 1, JITTER_DRAWS, 1, BLUR_DRAWS)
        u = self._draw(ops.shape(x)[0], sum(widths))
        ends = [sum(widths[:i + 1]) for i in range(len(widths))]
        u_crop, u_jitter = u[:, :ends[0]], u[:, ends[0]:ends[1]]
        u_gray, u_blur = u[:, ends[1]], u[:, ends[2]:ends[3]]

        flip_prob = FLIP_PROB if cfg.flip else 0.0
        x = resized_crop_from_uniform(x, u_crop, cfg.size, cfg.crop_scale,
                                              cfg.crop_ratio, flip_prob)
        strengths = (cfg.brightness, cfg.contrast, cfg.saturation)
        if cfg.order == "mixem":
            x = color_jitter_from_uniform(x, u_jitter, strengths, cfg.hue, cfg.jitter_prob)
            x = grayscale_from_uniform(x, u_gray, cfg.gray_prob)
            if cfg.blur_enabled:
                x = gaussian_blur_from_uniform(x, u_blur, cfg.blur_prob,
                                                       cfg.blur_sigma, cfg.blur_kernel_size)
        else:  # mice: the flip is already folded into the crop (it commutes with the rest)
            x = grayscale_from_uniform(x, u_gray, cfg.gray_prob)
            x = color_jitter_from_uniform(x, u_jitter, strengths, cfg.hue, cfg.jitter_prob)
        return normalize(x, cfg.mean, cfg.std)

    def _draw(self, batch, width):
        """Uniforms [batch, width]. Under tf.distribute every replica shares the seed state,
        so it draws for all replicas and keeps its own slice: views differ across replicas."""
        replica, replicas = replica_info()
        if replicas == 1:
            return uniform((batch, width), self.seed_generator)
        every = uniform((batch * replicas, width), self.seed_generator)
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
