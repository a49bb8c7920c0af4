"""Clustering methods as plug-ins: one `ClusteringMethod` subclass each, found by name here.

A method module registers its class with `@register_method`; `METHODS` answers "which names
exist" and `method_class` / `build_method` build one. Nothing outside `mixem_tf/methods/` names a
method.

Example:
    >>> sorted(METHODS)
    ['cdec', 'mice', 'mixem', 'scan', 'selflabel', 'simclr']
    >>> model = build_method(TrainConfig(dataset="digits").resolved(), (8, 8, 1), 10)
"""

from __future__ import annotations

from mixem_tf.methods.base import CLEAN, ClusteringMethod
from mixem_tf.methods.registry import METHODS, method_class, register_method
from mixem_tf.methods.cdec import CDEC  # each method module registers itself on import
from mixem_tf.methods.mice import MiCE
from mixem_tf.methods.mixem import MixEM
from mixem_tf.methods.scan import SCAN
from mixem_tf.methods.selflabel import SelfLabel
from mixem_tf.methods.simclr import SimCLR

__all__ = ["CDEC", "CLEAN", "METHODS", "ClusteringMethod", "MiCE", "MixEM", "SCAN",
           "SelfLabel", "SimCLR", "build_method", "method_class", "register_method"]


def build_method(config, input_shape, num_clusters: int) -> ClusteringMethod:
    """The model of a resolved `TrainConfig` for images of `input_shape` (H, W, C)."""
    from mixem_tf.backbones import build_backbone

    method = method_class(config.method)
    augment = method.augmentation(config.dataset, image_size=config.image_size)
    size = augment.size
    channels = augment.output_channels or input_shape[-1]
    backbone = build_backbone(config.backbone, (size[0], size[1], channels), stem=config.stem,
                              width=config.backbone_width)
    return method(
        backbone,
        augment,
        num_clusters=num_clusters,
        options=config.options,
        seed=config.seed,
        coupled_weight_decay=config.weight_decay if config.weight_decay_mode == "coupled" else 0.0,
    )
