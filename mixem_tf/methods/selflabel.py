"""SCAN's self-labelling step (Van Gansbeke et al., ECCV 2020, arXiv 2005.12320 §2.3;
docs/METHODS.md, "SCAN and self-labelling"), started from a `scan` run or any run with a
read-out.

Each image gets two views: the clean image (the official "standard" transform of this step is
the validation transform: resize and normalisation only) and a strong view (RandAugment-style
ops + cutout, `mixem_tf.augment.strong`). The clean view's prediction, without gradient,
labels the images whose max probability exceeds 0.99; the loss is the class-balanced
cross-entropy of the strong view's prediction against those labels
(`losses.confidence_cross_entropy`). The confident fraction of each batch is logged as
`confident`.

The head starts as the source's: copied from a `scan` (or `selflabel`) run, otherwise fitted
to the source's default read-out (a multinomial logistic regression on h). Official recipe
(configs/selflabel/selflabel_cifar10.yml): Adam 1e-4, weight decay 1e-4, batch 1000,
200 epochs, constant rate, no EMA.
"""

from __future__ import annotations

import sys

import keras
from keras import ops

from mixem_tf.augment import preprocess
from mixem_tf.losses import confidence_cross_entropy
from mixem_tf.methods.base import CLEAN
from mixem_tf.methods.declarations.selflabel import SelfLabelDeclaration
from mixem_tf.methods.stages import SourceStage, source_assignments

__all__ = ["SelfLabel"]


@keras.saving.register_keras_serializable("mixem_tf")
class SelfLabel(SelfLabelDeclaration, SourceStage):
    """The SelfLabel model (its declaration: `declarations.selflabel.SelfLabelDeclaration`)."""

    views = (CLEAN, "strong")
    loss_names = ("cross_entropy",)

    def __init__(self, backbone, augment_config, **kwargs):
        super().__init__(backbone, augment_config, **kwargs)
        self.confident_tracker = keras.metrics.Mean(name="confident")

    def prepare_training(self, images, run_dir, *, source=None, resume=False):
        """On a new run: the head copied from a stage source, or fitted to the source's
        default read-out (without a source, as for a model built outside a run, it stays
        random)."""
        if resume or source is None:  # resumed: the checkpoint holds the head
            return
        if self.copy_head(source):
            print(f"cluster head copied from {source}", file=sys.stderr)
            return
        labels, _, readout = source_assignments(source, images)
        agreement = self.fit_head(images, labels)
        print(f"head fitted to {readout.name} of {source} ({agreement:.0%} of its clusters "
              "reproduced)", file=sys.stderr)

    def make_views(self, images):
        return {CLEAN: preprocess(images, self.augment_config),
                "strong": self.strong_augmenter(images)}

    def loss_terms(self, outputs):
        loss, _ = confidence_cross_entropy(
            outputs[CLEAN]["logits"], outputs["strong"]["logits"],
            self.options.confidence_threshold,
            balance=self.options.class_balance == "inverse_count")
        return {"cross_entropy": loss}

    def update_after_loss(self, outputs):
        """Logs the confident fraction of the batch as `confident`."""
        confidence = ops.max(outputs[CLEAN]["p"], axis=-1)
        self.confident_tracker.update_state(
            ops.mean(ops.cast(confidence > self.options.confidence_threshold, "float32")))
