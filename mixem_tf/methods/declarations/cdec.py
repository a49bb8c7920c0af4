"""cdec's declaration: options, recipes, protocol, default read-out, search space (no Keras).

The model is `mixem_tf.methods.cdec.CDEC`; docs/METHODS.md §3 is the specification.
"""

from __future__ import annotations

from dataclasses import dataclass

from mixem_tf.methods.declaration import MethodDeclaration
from mixem_tf.methods.options import MethodOptions, option
from mixem_tf.methods.registry import register_method
from mixem_tf.recipes import dataset_recipe, recipe_table

__all__ = ["CDECDeclaration"]

# The official recipe (config.yaml, train.py): ResNet-34 with the ImageNet stem, Adam 3e-4, no
# weight decay, batch 128, 2000 epochs. The small datasets have none; theirs trains in minutes
# on a 2-core CPU with the small ConvNet at MIX'EM's small-recipe budget (equal epochs).
PAPER = {"backbone": "resnet34", "stem": "imagenet", "optimizer": "adam", "lr": 3e-4,
         "weight_decay": 0.0, "batch_size": 128, "epochs": 2000}
SMALL = {"backbone": "convnet", "optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0,
         "batch_size": 256}
RECIPES = recipe_table(PAPER, SMALL)


@register_method
class CDECDeclaration(MethodDeclaration):
    """cdec: contrastive learning + DEC centres + an anchor loss (Sundareswaran,
    Herrera-Gerena, Just, Jannesari, arXiv 2109.12714)."""

    name, title, model = "cdec", "cdec", "mixem_tf.methods.cdec:CDEC"

    @dataclass
    class Options(MethodOptions):
        temperature: float = option(0.5, "NT-Xent temperature τ", positive=True)
        projection_dim: int = option(128, "projection head output size", positive=True)
        hidden_dim: int = option(512, "hidden width of the heads (paper: 512)", positive=True)
        instance_weight: float = option(1.0, "α, weight of the instance (NT-Xent) loss",
                                        minimum=0)
        cluster_weight: float = option(1.0, "β, weight of the DEC clustering loss", minimum=0)
        anchor_weight: float = option(1.0, "γ, weight of the anchor loss", minimum=0)
        student_t_alpha: float = option(1.0, "degrees of freedom of the Student-t kernel",
                                        positive=True)

    pipeline = "cdec"
    protocol = {"train_on": "whole", "evaluate_on": "all"}
    default_readout = {"feature": "q", "normalize": False, "clustering": "argmax"}
    # α, β, γ log-uniform over a decade either side of the official 1, and the learning rate.
    search_space = {**MethodDeclaration.search_space, **{
        name: {"min": 0.1, "max": 10.0, "sampling": "log"}
        for name in ("instance_weight", "cluster_weight", "anchor_weight")}}

    @classmethod
    def recipe(cls, dataset):
        return dataset_recipe(RECIPES, dataset)
