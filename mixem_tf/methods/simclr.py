"""SimCLR (Chen et al. 2020) as MIX'EM's baseline: backbone + projection head + NT-Xent.

The clustering read-out is K-means on the L2-normalised backbone representation h, the
baseline MIX'EM's abstract reports (≈70% ACC on STL-10, METHODS.md §1.4–1.5).
"""

from __future__ import annotations

from mixem_tf.heads import ProjectionHead
from mixem_tf.losses import NTXentLoss
from mixem_tf.methods.base import ClusteringMethod

__all__ = ["SimCLR"]


class SimCLR(ClusteringMethod):
    """Two views, NT-Xent at temperature τ on the projection z (METHODS.md §1.2.1).

    Defaults follow MIX'EM's code for its SimCLR path: head 512 → 512 → ReLU → 32, τ = 0.5.

    Example:
        >>> model = SimCLR(build_backbone("resnet18", (32, 32, 3)), preset("simclr", "cifar10"),
        ...                num_clusters=10)
    """

    loss_names = ("nt_xent",)
    feature_names = ("h", "z")

    def __init__(self, backbone, augment_config, *, temperature=0.5, projection_dim=32,
                 hidden_dim=512, **kwargs):
        super().__init__(backbone, augment_config, **kwargs)
        self.projection = ProjectionHead(hidden_dim=hidden_dim, out_dim=projection_dim)
        self.nt_xent = NTXentLoss(temperature)

    @classmethod
    def options_from(cls, config):
        return {**super().options_from(config), "projection_dim": config.projection_dim}

    def forward(self, images, training):
        h = self.backbone(images, training=training)
        return {"h": h, "z": self.projection(h)}

    def loss_terms(self, views):
        return {"nt_xent": self.nt_xent(views[0]["z"], views[1]["z"])}
