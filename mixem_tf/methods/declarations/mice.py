"""MiCE's declaration: options, recipes, protocol, default read-out, search space (no Keras).

The model is `mixem_tf.methods.mice.MiCE`; docs/METHODS.md §2 is the specification.
"""

from __future__ import annotations

from dataclasses import dataclass

from mixem_tf.methods.declaration import MethodDeclaration
from mixem_tf.methods.options import MethodOptions, option
from mixem_tf.methods.registry import register_method
from mixem_tf.recipes import dataset_recipe

__all__ = ["MiCEDeclaration", "milestones"]


def milestones(text: str) -> list[int]:
    """"480,640,800" → [480, 640, 800]; "" → []. ValueError unless increasing ints >= 1."""
    try:
        epochs = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"lr_milestones must be epochs separated by commas, e.g. "
                         f"'480,640,800', got {text!r}") from None
    if any(e < 1 for e in epochs) or epochs != sorted(set(epochs)):
        raise ValueError(f"lr_milestones must be increasing epochs >= 1, got {text!r}")
    return epochs


# The paper recipe (train_MiCE.py, util.py; docs/METHODS.md §2.3): ResNet-34, SGD lr 1.0,
# momentum 0.9, coupled L2 1e-4 on everything including μ, batch 256, warm-up over 10 epochs,
# ×0.1 at the milestones. Its loop runs epochs 0..E inclusive, so `--epochs 1000` trains 1001.
PAPER = {"backbone": "resnet34", "optimizer": "sgd", "lr": 1.0, "weight_decay": 1e-4,
         "batch_size": 256}
CIFAR = {**PAPER, "stem": "cifar", "image_size": 32, "epochs": 1001,
         "options": {"lr_milestones": "480,640,800"}}
# Small datasets (no published recipe), sized for a 2-core CPU with the small ConvNet: a queue
# below the dataset size (16,384 keys would hold each digit ~9 times), a faster teacher (an
# epoch has few steps: digits 7, so m = 0.999 would lag ~140 epochs) and τ = κ = 0.5. Measured
# on digits, posterior ACC at 40 epochs, seeds 0/1/2: 0.943/0.893/0.767 with these settings
# against 0.788/0.752 (seeds 0/1) with τ = κ = 1, m = 0.99; at 60 epochs, seed 0, τ = κ = 1:
# m = 0.99 0.786, m = 0.9 0.819, ν = 512 0.834; τ = κ = 0.5: m = 0.99 0.863, m = 0.9 0.938;
# τ = κ = 0.2: 0.752. MNIST and Fashion-MNIST use the same settings, not measured there.
SMALL = {"backbone": "convnet", "optimizer": "sgd", "lr": 1.0, "weight_decay": 1e-4,
         "batch_size": 256, "options": {"queue_size": 1024, "ema_momentum": 0.9,
                                        "temperature": 0.5, "gating_temperature": 0.5,
                                        "lr_milestones": ""}}
RECIPES = {
    "cifar10": CIFAR,
    "cifar100_20": CIFAR,
    "stl10": {**PAPER, "stem": "imagenet", "image_size": 96, "epochs": 3001,
              "options": {"lr_milestones": "1500,2000,2500"}},
    "mnist": {**SMALL, "epochs": 15, "image_size": 28},
    "fashion_mnist": {**SMALL, "epochs": 15, "image_size": 28},
    "digits": {**SMALL, "epochs": 60, "image_size": 8},
    "folder": {**SMALL, "epochs": 60, "image_size": 32},
}


@register_method
class MiCEDeclaration(MethodDeclaration):
    """MiCE: mixture of contrastive experts (Tsai, Li, Zhu, ICLR 2021, arXiv 2105.01899)."""

    name, title, model = "mice", "MiCE", "mixem_tf.methods.mice:MiCE"

    @dataclass
    class Options(MethodOptions):
        temperature: float = option(1.0, "expert temperature τ (paper: 1.0)", positive=True)
        gating_temperature: float = option(1.0, "gating temperature κ (paper: κ = τ = 1.0)",
                                           positive=True)
        queue_size: int = option(16384, "negative keys per expert ν (paper: 16384); keep it "
                                 "below the number of training images", positive=True)
        ema_momentum: float = option(0.999, "teacher EMA momentum m (paper: 0.999)",
                                     minimum=0.0)
        embedding_dim: int = option(128, "expert and gating embedding size D (paper: 128)",
                                    positive=True)
        warmup_epochs: int = option(10, "linear learning-rate warm-up epochs; epoch 0 runs at "
                                    "rate 0 (paper: 10)", minimum=0)
        lr_milestones: str = option("480,640,800", "epochs after which the rate is multiplied "
                                    "by lr_decay, comma-separated (paper: CIFAR 480,640,800, "
                                    "STL-10 1500,2000,2500)")
        lr_decay: float = option(0.1, "learning-rate factor at each milestone", positive=True)

        def check(self):
            if self.ema_momentum >= 1.0:
                raise ValueError(f"ema_momentum must be below 1, got {self.ema_momentum}")
            milestones(self.lr_milestones)

    pipeline = "mice"
    protocol = {"train_on": "whole", "evaluate_on": "all"}
    default_readout = {"feature": "r", "normalize": False, "clustering": "argmax"}
    # The temperatures, around the paper's τ = κ = 1.0 and the small recipe's 0.5.
    search_space = {**MethodDeclaration.search_space,
                    "temperature": {"min": 0.1, "max": 2.0, "sampling": "log"},
                    "gating_temperature": {"min": 0.1, "max": 2.0, "sampling": "log"}}

    @classmethod
    def recipe(cls, dataset):
        return dataset_recipe(RECIPES, dataset)
