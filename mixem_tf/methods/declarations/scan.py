"""SCAN's declaration (no Keras): options, recipes, the source read-out it reads; the
model and the method's specification are in `mixem_tf.methods.scan`.
"""

from __future__ import annotations

from dataclasses import dataclass

from mixem_tf.methods.declarations.stages import StageDeclaration, stage_recipes
from mixem_tf.methods.options import MethodOptions, option
from mixem_tf.methods.registry import register_method
from mixem_tf.recipes import dataset_recipe

__all__ = ["ScanDeclaration"]

PAPER = {"optimizer": "adam", "lr": 1e-4, "weight_decay": 1e-4, "batch_size": 128,
         "epochs": 50}
# CPU datasets: a few hundred steps, not 20,000; the head starts at the source's clusters and
# the rate is 10x the official one (digits, one seed, 10 epochs from SimCLR's K-means on L2 h
# at 0.919 ACC: random head at 1e-4 0.68, at 1e-3 0.82; source head at 1e-3 0.938;
# docs/BENCHMARKS.md, "SCAN and self-labelling").
SMALL = {"optimizer": "adam", "lr": 1e-3, "weight_decay": 1e-4, "batch_size": 128,
         "options": {"head_init": "source"}}
RECIPES = stage_recipes(PAPER, SMALL, {"digits": 10, "mnist": 3, "fashion_mnist": 3})


@register_method
class ScanDeclaration(StageDeclaration):
    """Backbone + K-way softmax head trained so that neighbours agree (see the module).

    Example:
        python -m trainers.fit --method scan --init-from runs/simclr --out runs/scan
    """

    name, title = "scan", "SCAN"
    model = "mixem_tf.methods.scan:SCAN"

    @dataclass
    class Options(MethodOptions):
        num_neighbours: int = option(20, "neighbours mined per image (official: 20)",
                                     positive=True)
        entropy_weight: float = option(5.0, "weight of the entropy of the mean prediction "
                                       "(official: 5.0)", minimum=0)
        neighbour_readout: str | None = option(None, "the source read-out whose feature the "
                                        "neighbours are mined in, FEATURE/l2|raw/KIND "
                                        "(default: the source's default read-out)", kind=str)
        head_init: str = option("random", "start the head random (official; the paper "
                                "recipe) or fitted to the source's clusters (the CPU "
                                "datasets' recipe)", choices=("random", "source"))
        augmentation: str = option("strong", "the anchor's and neighbour's views: strong "
                                   "(RandAugment + cutout, the official config's) or simclr "
                                   "(the SimCLR views)", choices=("strong", "simclr"))
        strong_ops: int = option(4, "RandAugment ops per strong view (official: 4)",
                                 minimum=0)
        cutout: float = option(0.5, "largest cutout side, a fraction of the image side "
                               "(official: 16 px at 32 px)", minimum=0)

        def check(self):
            if self.cutout > 1:
                raise ValueError(f"cutout must be at most 1 (the whole side), got {self.cutout}")

    readout_option = "neighbour_readout"

    @classmethod
    def recipe(cls, dataset):
        return dataset_recipe(RECIPES, dataset)
