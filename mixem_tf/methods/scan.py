"""SCAN's clustering step (Van Gansbeke et al., ECCV 2020, arXiv 2005.12320 §2.2;
docs/METHODS.md, "SCAN and self-labelling"), started from a trained run of any method.

Before training, each training image's k = 20 nearest neighbours are mined in the source run's
feature (its default read-out's feature, or `--neighbour-readout`; for an argmax read-out the
source's embedding feature), once, and kept in the run directory (`mixem_tf.neighbours`). Each
training sample is an anchor and one of its neighbours or itself, drawn uniformly (the official
`NeighborsDataset` samples among the k nearest plus the image itself); the feeder delivers the
pair as uint8 [B, 2, H, W, C] (`training_batch`), and both get an independent strong view
(RandAugment-style ops + cutout, `mixem_tf.augment.strong`: the official SCAN config's "ours"
strategy; `--augmentation simclr` gives both SimCLR's views instead). The loss is `losses.scan_loss`: −mean log⟨p(anchor), p(neighbour)⟩ − 5.0 · entropy
of the mean prediction. The whole network is trained (official `update_cluster_head_only:
False`), with one head (official `num_heads: 1`).

Official recipe (configs/scan/scan_cifar10.yml): Adam 1e-4, weight decay 1e-4 (PyTorch's, an
L2 term), batch 128, 50 epochs, constant rate. Deliberate differences: the head starts random
by default as the official code, or (`--head-init source`) fitted to the source's clusters;
the final model is evaluated (the official code keeps the epoch with the lowest SCAN loss on
the validation set, which needs held-out neighbours).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np

from mixem_tf.losses import scan_loss
from mixem_tf.methods.options import MethodOptions, option
from mixem_tf.methods.registry import register_method
from mixem_tf.methods.stages import SourceStage, source_assignments, stage_recipes
from mixem_tf.recipes import dataset_recipe

__all__ = ["SCAN"]

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
class SCAN(SourceStage):
    """Backbone + K-way softmax head trained so that neighbours agree (see the module).

    Example:
        python -m trainers.fit --method scan --init-from runs/simclr --out runs/scan
    """

    name, title = "scan", "SCAN"

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

    views = ("anchor", "neighbour")
    loss_names = ("consistency", "neg_entropy")
    readout_option = "neighbour_readout"
    protocol = {"train_on": "whole", "evaluate_on": "all"}

    @classmethod
    def recipe(cls, dataset):
        return dataset_recipe(RECIPES, dataset)

    def __init__(self, backbone, augment_config, **kwargs):
        super().__init__(backbone, augment_config, **kwargs)
        self.neighbours = None

    def prepare_training(self, images, run_dir, *, source=None, resume=False):
        """Neighbours from the run directory, or mined in the source's feature (without a
        source, as for a model built outside a run: in its own L2-normalised h) and stored
        there; on a new run with `head_init="source"`, the head fitted to the source's
        clusters."""
        from mixem_tf.neighbours import load_neighbours, mine_neighbours, save_neighbours

        k = self.options.num_neighbours
        if k >= len(images):
            raise ValueError(f"--num-neighbours {k} needs more than {k} training images, "
                             f"got {len(images)}")
        stored = load_neighbours(run_dir, len(images), k) if run_dir is not None else None
        if stored is not None:
            self.neighbours = stored
            return
        if source is None:  # a model built outside a run (a benchmark): its own h
            where = "h/l2 of this model"
            features = np.asarray(self.predict(images, batch_size=256, verbose=0)["h"])
            labels, normalize = None, True
        else:
            labels, features, readout = source_assignments(
                source, images, self.options.neighbour_readout or None)
            where, normalize = f"{readout.name} of {source}", False
        print(f"mining {k} neighbours of {len(images)} images in {where}", file=sys.stderr)
        self.neighbours = mine_neighbours(features, k, normalize=normalize)
        if run_dir is not None:
            save_neighbours(run_dir, self.neighbours, feature=where)
        if not resume and self.options.head_init == "source" and labels is not None:
            agreement = self.fit_head(images, labels)
            print(f"head fitted to the source's clusters ({agreement:.0%} of them reproduced)",
                  file=sys.stderr)

    def training_batch(self, images, indices, rng):
        """[B, 2, H, W, C]: each anchor and one of (itself, its k neighbours), uniformly."""
        if self.neighbours is None:
            raise RuntimeError("scan's neighbours are not prepared (prepare_training)")
        candidates = np.concatenate([indices[:, None], self.neighbours[indices]], axis=1)
        partner = candidates[np.arange(len(indices)),
                             rng.integers(0, candidates.shape[1], len(indices))]
        return np.stack([images[indices], images[partner]], axis=1)

    def make_views(self, images):
        augment = (self.strong_augmenter if self.options.augmentation == "strong"
                   else self.augmenter)
        return {"anchor": augment(images[:, 0]), "neighbour": augment(images[:, 1])}

    def loss_terms(self, outputs):
        consistency, entropy = scan_loss(outputs["anchor"]["logits"],
                                         outputs["neighbour"]["logits"],
                                         self.options.entropy_weight)
        return {"consistency": consistency, "neg_entropy": -self.options.entropy_weight * entropy}
