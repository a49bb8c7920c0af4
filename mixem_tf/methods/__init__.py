"""Clustering methods, one `keras.Model` subclass each, built by name from a run's settings."""

from __future__ import annotations

from mixem_tf.methods.base import ClusteringMethod
from mixem_tf.methods.mixem import MixEM
from mixem_tf.methods.simclr import SimCLR

__all__ = ["METHODS", "ClusteringMethod", "MixEM", "SimCLR", "build_method"]

METHODS: dict[str, type[ClusteringMethod]] = {"mixem": MixEM, "simclr": SimCLR}


def build_method(config, input_shape, num_clusters: int) -> ClusteringMethod:
    """The model of a resolved `TrainConfig` for images of `input_shape` (H, W, C)."""
    from mixem_tf.augment import preset
    from mixem_tf.backbones import build_backbone

    if config.method not in METHODS:
        raise ValueError(f"unknown method {config.method!r}; choose from {sorted(METHODS)}")
    augment = preset(config.method, config.dataset, image_size=config.image_size)
    size = augment.size
    channels = augment.output_channels or input_shape[-1]
    backbone = build_backbone(config.backbone, (size[0], size[1], channels), stem=config.stem,
                              width=config.backbone_width)
    method = METHODS[config.method]
    return method(
        backbone,
        augment,
        num_clusters=num_clusters,
        seed=config.seed,
        coupled_weight_decay=config.weight_decay if config.weight_decay_mode == "coupled" else 0.0,
        **method.options_from(config),
    )
