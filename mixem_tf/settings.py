"""A run's settings: `TrainConfig` holds what every run shares, plus the method's options.

`resolved()` fills the unset fields from the method's recipe for the dataset
(`MethodDeclaration.recipe`, built with `mixem_tf.recipes`) and the method's paper protocol,
completes and checks the method's options (`MethodDeclaration.Options`), and checks every shared
value. A `folder:` path is stored absolute, so a run resumes and exports from any working
directory. A dict-valued option (MIX'EM's term weights) merges the user's entries over the
recipe's, entry by entry. A method that refines another run (SCAN's stages) takes what it
declares in `source_settings` from its `--init-from` run before the recipe.

Example:
    >>> config = TrainConfig(dataset="digits", method="mixem", options={"num_components": 20})
    >>> config.resolved().options["term_weights"]          # the small recipe's
    {'pull': 0.01, 'push': 0.005}
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from mixem_tf.recipes import cpu_folder_recipe, uses_cpu_recipe

__all__ = ["TrainConfig"]

# Settings that runs saved before methods owned their options kept at the top level.
LEGACY_OPTIONS = ("temperature", "projection_dim", "num_components", "embedding_dim",
                  "sharpening", "term_weights", "start_epochs", "constant_epochs")


@dataclass
class TrainConfig:
    """Every setting of a run; `None` fields are filled from the recipe by `resolved()`.

    Saved as the run's `config.json` and read back by `--resume` and the exporters. `options`
    holds the method's own settings (all of them once resolved).
    """

    method: str = "mixem"
    dataset: str = "fashion_mnist"
    data_dir: str | None = None
    train_on: str | None = None
    evaluate_on: str | None = None
    image_size: int | None = None
    backbone: str | None = None
    backbone_width: int | None = None
    stem: str | None = None
    clusters: int | None = None
    choose_clusters: list | None = None
    folder_labels: str = "subfolders"
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    optimizer: str | None = None
    momentum: float = 0.9
    weight_decay: float | None = None
    weight_decay_mode: str = "coupled"
    init_from: str | None = None
    seed: int = 0
    precision: str = "float32"
    strategy: str = "default"
    readout_settings: str = "official"
    options: dict = field(default_factory=dict)

    CHOICES = {
        "optimizer": ("adam", "sgd", None),
        "weight_decay_mode": ("coupled", "decoupled"),
        "precision": ("float32", "mixed_bfloat16", "mixed_float16"),
        "strategy": ("default", "mirrored", "multiworker"),
        "readout_settings": ("official", "sklearn"),
        "train_on": ("whole", "train", None),
        "evaluate_on": ("test", "all", None),
        "folder_labels": ("subfolders", "none"),
    }
    INTEGERS = ("epochs", "batch_size", "image_size", "backbone_width", "clusters", "seed")
    NUMBERS = ("lr", "momentum", "weight_decay")
    STRINGS = ("method", "dataset")

    @classmethod
    def fields(cls) -> set:
        return {f.name for f in dataclasses.fields(cls)}

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        """Settings from a dict (a --config file, flags): the shared fields, the method's
        options nested under "options" or given at the top level by name."""
        if not isinstance(values, dict):
            raise ValueError(f"settings must be a JSON object, got {values!r}")
        values = dict(values)
        options = values.pop("options", None) or {}
        if not isinstance(options, dict):
            raise ValueError(f"options must be a JSON object, got {options!r}")
        options = {**{k: values.pop(k) for k in list(values) if k not in cls.fields()},
                   **options}
        return cls(**values, options=options)

    @classmethod
    def from_saved(cls, settings: dict) -> "TrainConfig":
        """The settings of a run's `config.json`, including runs saved before methods owned
        their options (whose MIX'EM/SimCLR settings sat at the top level)."""
        from mixem_tf.methods import method_declaration

        settings = dict(settings)
        if any(k in settings for k in (*LEGACY_OPTIONS, "extra")):
            names = method_declaration(settings.get("method", "mixem")).Options.fields()
            legacy = {k: settings.pop(k) for k in LEGACY_OPTIONS if k in settings}
            options = {k: v for k, v in {**legacy, **settings.pop("extra", {})}.items()
                       if k in names}
            settings["options"] = {**options, **settings.get("options", {})}
        return cls.from_dict(settings)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def resolved(self, gpu: bool = True) -> "TrainConfig":
        """A copy with the recipe's defaults filled in and every value checked. A `folder:`
        run with the ConvNet, or without a `gpu` and no backbone given, gets the CPU recipe
        (`mixem_tf.recipes.uses_cpu_recipe`).

        `clusters` may be "auto" or "A..B" (`choosing_k.parse_clusters`): the method's heads
        are then built for the range's upper bound and `choose_clusters` keeps the range, from
        which K is chosen without labels after training.
        """
        from mixem_tf.data.folder import absolute_folder_name
        from mixem_tf.methods import method_declaration

        if isinstance(self.clusters, str):
            from mixem_tf.choosing_k import parse_clusters

            parsed = parse_clusters(self.clusters)
            choose = list(parsed) if isinstance(parsed, tuple) else None
            return dataclasses.replace(self, clusters=choose[1] if choose else parsed,
                                       choose_clusters=choose).resolved(gpu)
        self._check_types()
        method = method_declaration(self.method)
        if uses_cpu_recipe(self.dataset, self.backbone, gpu):
            recipe = cpu_folder_recipe(method.recipe)
        else:
            recipe = method.recipe(self.dataset)
        recipe_options = recipe.pop("options", {})
        values = self.to_dict()
        inherited = method.source_settings(self.init_from) if self.init_from else {}
        for key, value in {**recipe, **inherited}.items():
            if values[key] is None:
                values[key] = value
        for key, value in method.protocol.items():
            values[key] = values[key] or value
        values["dataset"] = absolute_folder_name(values["dataset"])
        options = dict(recipe_options)
        for key, value in self.options.items():
            both_dicts = isinstance(value, dict) and isinstance(options.get(key), dict)
            options[key] = {**options[key], **value} if both_dicts else value
        values["options"] = method.Options.from_dict(options, self.method).to_dict()
        config = TrainConfig(**values)
        config.validate()
        return config

    def _check_types(self) -> None:
        """ValueError naming a setting of the wrong type (e.g. text from a --config file)."""
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        kinds = {**{n: ((int,), "an integer") for n in self.INTEGERS},
                 **{n: ((int, float), "a number") for n in self.NUMBERS},
                 **{n: ((str,), "a string") for n in self.STRINGS},
                 "options": ((dict,), "a JSON object")}
        for name, (types, wanted) in kinds.items():
            value = getattr(self, name)
            if value is None and defaults.get(name) is None:
                continue
            if isinstance(value, bool) or not isinstance(value, types):
                raise ValueError(f"{name} must be {wanted}, got {value!r}")

    def validate(self) -> None:
        self._check_types()
        for name, choices in self.CHOICES.items():
            if getattr(self, name) not in choices:
                raise ValueError(f"{name} must be one of {[c for c in choices if c]}, "
                                 f"got {getattr(self, name)!r}")
        positive = {"epochs": self.epochs, "lr": self.lr, "image_size": self.image_size,
                    "backbone_width": self.backbone_width}
        for name, value in positive.items():
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if self.batch_size is not None and self.batch_size < 2:
            raise ValueError(f"batch_size must be at least 2 (contrastive losses compare the "
                             f"images of a batch), got {self.batch_size}")
        if self.clusters is not None and self.clusters < 2:
            raise ValueError(f"the number of clusters must be at least 2, got {self.clusters}")
        if self.choose_clusters is not None:
            low, high = self.choose_clusters
            if not 2 <= low < high or self.clusters != high:
                raise ValueError(f"choose_clusters {self.choose_clusters} must be [A, B] with "
                                 "2 <= A < B = clusters")
        if self.weight_decay is not None and self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
