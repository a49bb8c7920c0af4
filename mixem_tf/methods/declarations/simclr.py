"""SimCLR's declaration (MIX'EM's baseline): options, recipe, search space (no Keras).

The model is `mixem_tf.methods.simclr.SimCLR`; docs/METHODS.md §1.2.1 and §1.4 specify it.
"""

from __future__ import annotations

from dataclasses import dataclass

from mixem_tf.methods.declaration import MethodDeclaration
from mixem_tf.methods.declarations.mixem import mixem_recipe
from mixem_tf.methods.options import MethodOptions, option
from mixem_tf.methods.registry import register_method

__all__ = ["SimCLRDeclaration"]


@register_method
class SimCLRDeclaration(MethodDeclaration):
    """SimCLR (Chen et al. 2020, arXiv 2002.05709) trained as MIX'EM's code trains it."""

    name, title, model = "simclr", "SimCLR", "mixem_tf.methods.simclr:SimCLR"

    @dataclass
    class Options(MethodOptions):
        temperature: float = option(0.5, "NT-Xent temperature τ", positive=True)
        projection_dim: int = option(32, "projection head output size", positive=True)
        hidden_dim: int = option(512, "hidden width of the heads (paper: 512)", positive=True)
        constant_epochs: int = option(10, "epochs at the base learning rate before cosine "
                                      "annealing (official: 10)", minimum=0)

    search_space = {**MethodDeclaration.search_space,
                    "temperature": {"min": 0.1, "max": 1.0, "sampling": "log"}}

    @classmethod
    def recipe(cls, dataset):
        recipe = mixem_recipe(dataset)
        recipe.pop("options", None)  # MIX'EM's term weights
        return recipe
