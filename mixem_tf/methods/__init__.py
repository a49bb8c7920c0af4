"""Clustering methods as plug-ins: one declaration and one model each, found by name here.

Importing this package loads no framework: it registers each method's declaration
(`mixem_tf/methods/declarations/`: name, options, recipes, protocol, search space), which is
all `--help`, `TrainConfig.resolved()` and `trainers.tune` read. A method's Keras model
(`mixem_tf/methods/NAME.py`) is imported when one is built (`method_class`, `build_method`) or
when it is asked for by name here (`from mixem_tf.methods import MixEM`). Adding a method: its
declaration module (imported below) and its model module. Nothing outside
`mixem_tf/methods/` names a method.

Example:
    >>> sorted(METHODS)
    ['cdec', 'mice', 'mixem', 'scan', 'selflabel', 'simclr']
    >>> model = build_method(TrainConfig(dataset="digits").resolved(), (8, 8, 1), 10)
"""

from __future__ import annotations

from mixem_tf.methods.declaration import MethodDeclaration
from mixem_tf.methods.registry import (METHODS, import_models, method_class,
                                       method_declaration, register_method)
from mixem_tf.methods.declarations import (  # noqa: F401  (each registers its method)
    cdec, mice, mixem, scan, selflabel, simclr)

__all__ = ["CDEC", "CLEAN", "METHODS", "ClusteringMethod", "MethodDeclaration", "MiCE", "MixEM",
           "SCAN", "SelfLabel", "SimCLR", "build_method", "import_models", "method_class",
           "method_declaration", "register_method"]

#: Names importable from here whose modules load Keras, imported on first use.
_MODELS = {"CLEAN": "base", "ClusteringMethod": "base", "CDEC": "cdec", "MiCE": "mice",
           "MixEM": "mixem", "SCAN": "scan", "SelfLabel": "selflabel", "SimCLR": "simclr"}


def __getattr__(name):
    if name not in _MODELS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f"{__name__}.{_MODELS[name]}"), name)


def build_method(config, input_shape, num_clusters: int):
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
