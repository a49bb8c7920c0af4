"""MIX'EM (Varamesh & Tuytelaars, ACCV 2020): a mixture of embeddings on a contrastive model.

Loss (docs/METHODS.md §1.2), per view v ∈ {a, b}:
    NT-Xent(z^a, z^b)                                  (τ = 0.5)
  + w_ent  · Σ_v Σ_k p̄^v_k log p̄^v_k                    (i)   w_ent  = 2.0
  + w_sh   · Σ_v sharpening(π^v)                       (ii)  w_sh   = 0.1, "max" (official code)
  + Σ_v (w_pull · pull^v + w_push · push^v)            (iii) w_pull = 0.1, w_push = 0.05
Every auxiliary term is summed over the two views, as the official code does (so its effective
weight is twice the configured one). Terms (i)–(iii) see the global batch under tf.distribute
(π and z gathered across replicas), as the official single-GPU/DataParallel code does. Each term
may start at a later epoch (`start_epochs`); the official code starts them all at once.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from mixem_tf.distributed import gather_replicas
from mixem_tf.heads import MixtureHead
from mixem_tf.losses import (NTXentLoss, associative_pull_push, marginal_negative_entropy,
                             sharpening)
from mixem_tf.methods.base import ClusteringMethod
from mixem_tf.methods.declarations.mixem import TERM_WEIGHTS, MixEMDeclaration
from mixem_tf.schedules import ConstantThenCosine

__all__ = ["MixEM", "TERM_WEIGHTS", "constant_then_cosine"]


def constant_then_cosine(cls, config, steps_per_epoch: int):
    """MIX'EM's schedule: `constant_epochs` at the base rate, then cosine over the run."""
    return ConstantThenCosine(config.lr, steps_per_epoch, config.options["constant_epochs"],
                              cosine_epochs=config.epochs)


@keras.saving.register_keras_serializable("mixem_tf")
class MixEM(MixEMDeclaration, ClusteringMethod):
    """Backbone + `MixtureHead`; NT-Xent on the mixed embedding z plus MIX'EM's three terms.

    Options: num_components (K of the mixture; default the number of clusters, may be larger),
    embedding_dim (d, paper 32), hidden_dim (the heads' hidden width, paper 512), temperature (NT-Xent τ), sharpening ("max", official code, or
    "entropy", the paper's wording), term_weights (overrides of `TERM_WEIGHTS`), start_epochs
    ({term: first epoch (0-based) it is on}, read from the model's `epoch`), constant_epochs.

    Example:
        >>> model = MixEM(build_backbone("resnet18", (96, 96, 3)), MixEM.augmentation("stl10"),
        ...               num_clusters=10)
    """

    loss_names = ("nt_xent", "entropy", "sharpening", "pull", "push")
    feature_names = ("h", "z", "e_max", "pi")
    readout_features = ("h", "z", "e_max")
    readout_kinds = ("kmeans", "kmeans_component_init")
    own_readouts = (("pi", "mixture_argmax"),)
    embedding_feature = "z"
    learning_rate = classmethod(constant_then_cosine)

    def __init__(self, backbone, augment_config, *, num_clusters, **kwargs):
        super().__init__(backbone, augment_config, num_clusters=num_clusters, **kwargs)
        self.num_components = int(self.options.num_components or num_clusters)
        if self.num_components < self.num_clusters:
            raise ValueError(f"num_components ({self.num_components}) must be at least the "
                             f"number of clusters ({self.num_clusters})")
        self.weights_by_term = {**TERM_WEIGHTS, **self.options.term_weights}
        self.start_epochs = dict(self.options.start_epochs)
        self.mixture = MixtureHead(self.num_components, self.options.embedding_dim,
                                   self.options.hidden_dim)
        self.nt_xent = NTXentLoss(self.options.temperature)

    def readout_context(self, features):
        return {"components": np.argmax(features["pi"], axis=-1),
                "num_components": self.num_components}

    def monitors(self, images, out_dir):
        from mixem_tf.callbacks import ClusterSizeMonitor
        from mixem_tf.runs import OCCUPANCY_FILE

        return [ClusterSizeMonitor(images[:2048], "pi", out_dir and out_dir / OCCUPANCY_FILE,
                                   what="component", advice="raise the marginal-entropy "
                                   "weight or lower the learning rate")]

    def forward(self, images, training):
        h = self.backbone(images, training=training)
        return {"h": h, **self.mixture(h)}

    def _switch(self, term):
        """1.0 once `term`'s start epoch is reached, else 0.0."""
        start = self.start_epochs.get(term, 0)
        if not start:
            return 1.0
        return ops.cast(self.epoch >= start, "float32")

    def loss_terms(self, outputs):
        views = [outputs[name] for name in self.views]
        terms = {"nt_xent": self.nt_xent(views[0]["z"], views[1]["z"]),
                 "entropy": 0.0, "sharpening": 0.0, "pull": 0.0, "push": 0.0}
        for view in views:
            pi, logits, z = (gather_replicas(view[k]) for k in ("pi", "logits", "z"))
            pull, push = associative_pull_push(z, pi)
            terms["entropy"] += marginal_negative_entropy(pi)
            terms["sharpening"] += sharpening(logits, self.options.sharpening)
            terms["pull"] += pull
            terms["push"] += push
        for name, weight in self.weights_by_term.items():
            terms[name] = weight * self._switch(name) * terms[name]
        return terms
