"""SimCLR (Chen et al. 2020) as MIX'EM's baseline: backbone + projection head + NT-Xent.

Trained with MIX'EM's recipe and schedule (its code's SimCLR path). The clustering read-out is
K-means on the L2-normalised backbone representation h, the baseline MIX'EM's abstract reports
(≈70% ACC on STL-10, docs/METHODS.md §1.4–1.5).
"""

from __future__ import annotations

import keras

from mixem_tf.heads import ProjectionHead
from mixem_tf.losses import NTXentLoss
from mixem_tf.methods.base import ClusteringMethod
from mixem_tf.methods.declarations.simclr import SimCLRDeclaration
from mixem_tf.methods.mixem import constant_then_cosine

__all__ = ["SimCLR"]


@keras.saving.register_keras_serializable("mixem_tf")
class SimCLR(SimCLRDeclaration, ClusteringMethod):
    """Two views, NT-Xent at temperature τ on the projection z (docs/METHODS.md §1.2.1).

    Defaults follow MIX'EM's code for its SimCLR path: head 512 → 512 → ReLU → 32, τ = 0.5.

    Example:
        >>> model = SimCLR(build_backbone("resnet18", (32, 32, 3)),
        ...                SimCLR.augmentation("cifar10"), num_clusters=10)
    """

    loss_names = ("nt_xent",)
    feature_names = ("h", "z")
    learning_rate = classmethod(constant_then_cosine)

    def __init__(self, backbone, augment_config, **kwargs):
        super().__init__(backbone, augment_config, **kwargs)
        self.projection = ProjectionHead(hidden_dim=self.options.hidden_dim,
                                         out_dim=self.options.projection_dim)
        self.nt_xent = NTXentLoss(self.options.temperature)

    def forward(self, images, training):
        h = self.backbone(images, training=training)
        return {"h": h, "z": self.projection(h)}

    def loss_terms(self, outputs):
        return {"nt_xent": self.nt_xent(outputs["a"]["z"], outputs["b"]["z"])}
