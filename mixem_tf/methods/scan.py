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

import keras
import numpy as np

from mixem_tf.data.cache import read_rows
from mixem_tf.losses import scan_loss
from mixem_tf.methods.declarations.scan import ScanDeclaration
from mixem_tf.methods.stages import SourceStage, source_assignments

__all__ = ["SCAN"]


@keras.saving.register_keras_serializable("mixem_tf")
class SCAN(ScanDeclaration, SourceStage):
    """The SCAN model (its declaration: `declarations.scan.ScanDeclaration`)."""

    views = ("anchor", "neighbour")
    loss_names = ("consistency", "neg_entropy")

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
        return np.stack([read_rows(images, indices), read_rows(images, partner)], axis=1)

    def make_views(self, images):
        augment = (self.strong_augmenter if self.options.augmentation == "strong"
                   else self.augmenter)
        return {"anchor": augment(images[:, 0]), "neighbour": augment(images[:, 1])}

    def loss_terms(self, outputs):
        consistency, entropy = scan_loss(outputs["anchor"]["logits"],
                                         outputs["neighbour"]["logits"],
                                         self.options.entropy_weight)
        return {"consistency": consistency, "neg_entropy": -self.options.entropy_weight * entropy}
