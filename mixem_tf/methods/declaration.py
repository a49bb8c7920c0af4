"""What a method declares without Keras: its name, settings, recipes, protocol and tuning.

A method is two classes. Its declaration (a `MethodDeclaration` subclass in
`mixem_tf/methods/declarations/`, registered with `@register_method`) holds everything a
command reads before it builds a model: `--help` lists its options, `TrainConfig.resolved()`
fills in its recipe and protocol, `trainers.tune` reads its search space. Importing it loads
no framework, so `--help` and a bad setting answer at once. Its model (a subclass of the
declaration and of `ClusteringMethod`, in `mixem_tf/methods/NAME.py`, named by `model`) is
imported only when a model is built (`method_class`, `build_method`).

Example:
    >>> @register_method
    ... class ToyDeclaration(MethodDeclaration):
    ...     name, title, model = "toy", "Toy", "my_package.toy:Toy"
    ...     @classmethod
    ...     def recipe(cls, dataset):
    ...         return {"lr": 1e-3}
"""

from __future__ import annotations

from importlib import import_module
from typing import ClassVar

from mixem_tf.methods.options import MethodOptions

__all__ = ["MethodDeclaration"]


class MethodDeclaration:
    """A method's declarations, readable without Keras.

    Class attributes a method sets:
        name, title: registry name (`--method`) and display name.
        model: "module:Class" of its Keras model (a subclass of this declaration and of
            `ClusteringMethod`).
        Options: its `MethodOptions` dataclass.
        pipeline: its view pipeline (a key of `methods.augmentation.PIPELINES`).
        protocol: its paper's train/evaluation data ({"train_on", "evaluate_on"}).
        default_readout: {"feature", "normalize", "clustering"} of its default read-out row.
        search_space: what `trainers.tune` may tune, {setting: range}: a setting is a
            `TrainConfig` field ("lr"), an option ("temperature") or an entry of a dict option
            ("term_weights.pull"); a range is {"min", "max", "sampling": "linear"|"log"}
            (a float, or an int when both ends are ints) or {"values": [...]}
            (`mixem_tf.tuning.space` checks it).
        tuning_objective: `trainers.tune`'s default label-free objective for the method (a
            name of `mixem_tf.tuning.objectives.OBJECTIVES`): the consensus, the one objective
            that ranked trials positively in every measured study, unless the method
            measured a better one (docs/BENCHMARKS.md, "keras-tuner objectives").
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    model: ClassVar[str] = ""
    Options: ClassVar[type[MethodOptions]] = MethodOptions
    pipeline: ClassVar[str] = "simclr"
    protocol: ClassVar[dict] = {"train_on": "whole", "evaluate_on": "test"}
    default_readout: ClassVar[dict] = {"feature": "h", "normalize": True, "clustering": "kmeans"}
    search_space: ClassVar[dict] = {"lr": {"min": 1e-4, "max": 1e-2, "sampling": "log"}}
    tuning_objective: ClassVar[str] = "consensus"

    @classmethod
    def source_settings(cls, source_dir) -> dict:
        """`TrainConfig` fields a run of this method takes from its `--init-from` run when the
        user leaves them unset (the data, resolution, backbone, K of a stage that refines that
        run); none by default."""
        return {}

    @classmethod
    def check_source(cls, config) -> None:
        """Before anything is written: ValueError (one line) if `config.init_from` cannot
        start this method (or is missing where the method needs one); nothing by default."""

    @classmethod
    def recipe(cls, dataset: str) -> dict:
        """The method's run settings on `dataset`: `TrainConfig` fields and, under "options",
        its own options; the user's settings override them. ValueError for an unknown dataset."""
        raise NotImplementedError

    @classmethod
    def augmentation(cls, dataset: str, image_size=None):
        """The augmented views' `AugmentConfig` on `dataset` at `image_size` (None: native)."""
        from mixem_tf.methods.augmentation import view_config

        return view_config(cls.pipeline, dataset, image_size)

    @classmethod
    def model_class(cls):
        """The method's Keras model class (imports its module, which loads Keras)."""
        module, _, name = cls.model.partition(":")
        model = getattr(import_module(module), name)
        if not issubclass(model, cls):
            raise TypeError(f"{cls.model} must subclass {cls.__name__}")
        return model
