"""SelfLabel's declaration (no Keras): options, recipes, the source read-out it reads; the
model and the method's specification are in `mixem_tf.methods.selflabel`.
"""

from __future__ import annotations

from dataclasses import dataclass

from mixem_tf.methods.declarations.stages import StageDeclaration, stage_recipes
from mixem_tf.methods.options import MethodOptions, option
from mixem_tf.methods.registry import register_method
from mixem_tf.recipes import dataset_recipe

__all__ = ["SelfLabelDeclaration"]

PAPER = {"optimizer": "adam", "lr": 1e-4, "weight_decay": 1e-4, "batch_size": 1000,
         "epochs": 200}
SMALL = {"optimizer": "adam", "lr": 1e-4, "weight_decay": 1e-4, "batch_size": 256}
RECIPES = stage_recipes(PAPER, SMALL, {"digits": 5, "mnist": 2, "fashion_mnist": 2})


@register_method
class SelfLabelDeclaration(StageDeclaration):
    """Backbone + K-way softmax head trained on its own confident predictions (see the module).

    Example:
        python -m trainers.fit --method selflabel --init-from runs/scan --out runs/selflabel
    """

    name, title = "selflabel", "self-labelling"
    model = "mixem_tf.methods.selflabel:SelfLabel"

    @dataclass
    class Options(MethodOptions):
        confidence_threshold: float = option(0.99, "an image is labelled when its max "
                                             "probability exceeds this (official: 0.99)",
                                             minimum=0)
        class_balance: str = option("inverse_count", "weigh each confident class inversely "
                                    "to its count (official) or not",
                                    choices=("inverse_count", "none"))
        strong_ops: int = option(4, "RandAugment ops per strong view (official: 4)",
                                 minimum=0)
        cutout: float = option(0.5, "largest cutout side, a fraction of the image side "
                               "(official: 16 px at 32 px)", minimum=0)

        def check(self):
            if self.confidence_threshold >= 1:
                raise ValueError("confidence_threshold must be below 1, got "
                                 f"{self.confidence_threshold}")
            if self.cutout > 1:
                raise ValueError(f"cutout must be at most 1 (the whole side), got {self.cutout}")


    @classmethod
    def recipe(cls, dataset):
        return dataset_recipe(RECIPES, dataset)
