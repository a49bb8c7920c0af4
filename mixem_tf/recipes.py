"""Training settings: one `TrainConfig` per run, its defaults from each method's recipe.

The paper recipe (MIX'EM's `config.yaml`, METHODS.md §1.3) holds for STL-10 and CIFAR: ResNet-18,
Adam 1e-4, coupled L2 1e-5, batch 512, 200 epochs, constant LR for 10 epochs then cosine,
τ = 0.5. The small datasets (digits, MNIST, Fashion-MNIST) have no published recipe; their
defaults are chosen to train in minutes on a 2-core CPU with the small ConvNet; there MIX'EM's
pull/push term (iii) runs at a tenth of its official weight, which measured better on every
read-out of digits (200 epochs) and on the z read-outs of Fashion-MNIST (3 and 10 epochs), over
3-5 seeds (docs/BENCHMARKS.md). `--term-weights '{"pull": 0.1, "push": 0.05}'` restores the official ones.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

__all__ = ["TrainConfig", "recipe_defaults"]

PAPER = {"backbone": "resnet18", "batch_size": 512, "epochs": 200, "lr": 1e-4,
         "weight_decay": 1e-5, "constant_epochs": 10}
SMALL = {"backbone": "convnet", "batch_size": 256, "lr": 1e-3, "weight_decay": 1e-5,
         "constant_epochs": 10, "term_weights": {"pull": 0.01, "push": 0.005}}
DATASET_DEFAULTS = {
    "stl10": {**PAPER, "image_size": 96},
    "cifar10": {**PAPER, "image_size": 32},
    "cifar100_20": {**PAPER, "image_size": 32},
    "mnist": {**SMALL, "epochs": 15, "image_size": 28},
    "fashion_mnist": {**SMALL, "epochs": 15, "image_size": 28},
    "digits": {**SMALL, "epochs": 60, "image_size": 8},
    "folder": {**PAPER, "batch_size": 256, "image_size": 96},
}


def recipe_defaults(dataset: str) -> dict:
    """The defaults of a dataset name (`folder:PATH` uses the "folder" entry)."""
    key = "folder" if dataset.startswith("folder:") else dataset
    if key not in DATASET_DEFAULTS:
        raise ValueError(f"unknown dataset {dataset!r}; choose from "
                         f"{sorted(DATASET_DEFAULTS)} or folder:PATH")
    return dict(DATASET_DEFAULTS[key])


@dataclass
class TrainConfig:
    """Every setting of a run; `None` fields are filled from the recipe by `resolved()`.

    Saved as the run's `config.json` and read back by `--resume` and the exporters.
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
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    optimizer: str = "adam"
    momentum: float = 0.9
    weight_decay: float | None = None
    weight_decay_mode: str = "coupled"
    constant_epochs: int | None = None
    temperature: float = 0.5
    projection_dim: int = 32
    num_components: int | None = None
    embedding_dim: int = 32
    sharpening: str = "max"
    term_weights: dict = field(default_factory=dict)
    start_epochs: dict = field(default_factory=dict)
    init_from: str | None = None
    seed: int = 0
    precision: str = "float32"
    strategy: str = "default"
    readout_settings: str = "official"
    extra: dict = field(default_factory=dict)

    CHOICES = {
        "optimizer": ("adam", "sgd"),
        "weight_decay_mode": ("coupled", "decoupled"),
        "precision": ("float32", "mixed_bfloat16", "mixed_float16"),
        "strategy": ("default", "mirrored", "multiworker"),
        "readout_settings": ("official", "sklearn"),
        "sharpening": ("max", "entropy"),
        "train_on": ("whole", "train", None),
        "evaluate_on": ("test", "all", None),
    }

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown settings {unknown}; valid: {sorted(known)}")
        return cls(**values)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def resolved(self) -> "TrainConfig":
        """A copy with recipe defaults filled in and every value checked."""
        from mixem_tf.data import paper_protocol
        from mixem_tf.methods.mixem import check_term_settings

        values = self.to_dict()
        recipe = recipe_defaults(self.dataset)
        recipe_weights = recipe.pop("term_weights", {})
        if self.method == "mixem":  # the recipe's MIX'EM term weights, the user's on top
            check_term_settings(self.term_weights, self.start_epochs)
            values["term_weights"] = {**recipe_weights, **self.term_weights}
        for key, value in recipe.items():
            if values.get(key) is None:
                values[key] = value
        protocol = paper_protocol(self.method)
        values["train_on"] = values["train_on"] or protocol["train_on"]
        values["evaluate_on"] = values["evaluate_on"] or protocol["evaluate_on"]
        config = TrainConfig(**values)
        config.validate()
        return config

    INTEGERS = ("epochs", "batch_size", "image_size", "backbone_width", "clusters",
                "constant_epochs", "projection_dim", "num_components", "embedding_dim", "seed")
    NUMBERS = ("lr", "momentum", "weight_decay", "temperature")
    DICTS = ("term_weights", "start_epochs", "extra")

    def _check_types(self) -> None:
        """ValueError naming a setting of the wrong type (e.g. text from a --config file)."""
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        kinds = {**{n: ((int,), "an integer") for n in self.INTEGERS},
                 **{n: ((int, float), "a number") for n in self.NUMBERS},
                 **{n: ((dict,), "a JSON object") for n in self.DICTS}}
        for name, (types, wanted) in kinds.items():
            value = getattr(self, name)
            if value is None and defaults[name] is None:
                continue
            if isinstance(value, bool) or not isinstance(value, types):
                raise ValueError(f"{name} must be {wanted}, got {value!r}")

    def validate(self) -> None:
        self._check_types()
        for name, choices in self.CHOICES.items():
            if getattr(self, name) not in choices:
                raise ValueError(f"{name} must be one of {[c for c in choices if c]}, "
                                 f"got {getattr(self, name)!r}")
        positive = {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr,
                    "temperature": self.temperature, "image_size": self.image_size,
                    "backbone_width": self.backbone_width}
        for name, value in positive.items():
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if self.clusters is not None and self.clusters < 2:
            raise ValueError(f"the number of clusters must be at least 2, got {self.clusters}")
        if self.weight_decay is not None and self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
