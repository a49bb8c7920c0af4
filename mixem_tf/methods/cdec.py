"""cdec: contrastive learning + DEC cluster centres + an anchor loss (Sundareswaran,
Herrera-Gerena, Just, Jannesari, arXiv 2109.12714; docs/METHODS.md §3).

Three inputs per image: the clean view x (resize only) and two augmented views x^a, x^b.
    α · NT-Xent(z^a, z^b)                                   instance loss, τ = 0.5
  + β · KL(p ‖ q(x))                                        DEC self-training on the clean view
  + γ · [KL(q(x) ‖ q(x^a)) + KL(q(x) ‖ q(x^b))]             anchor loss
with α = β = γ = 1, q the Student-t assignment of h to K trainable centres (α_t = 1), p DEC's
sharpened target (a constant, its cluster frequencies from the global batch) and q(x) a constant
in the anchor term (it is trained through the DEC term). Every log and division is guarded.

The centres start from K-means on h of the clean training images (`initialize_state`): of the
untrained network, as the official code, or of a SimCLR run's backbone with `--init-from`.
Deliberate differences from the official code: images stay at the dataset's native size (the
official code upsamples everything to 224 px; `--image-size 224` restores it), the centre
initialisation runs the network in inference mode (the official code updates BatchNorm's
statistics there), and K is the run's, not a hard-coded 10.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from mixem_tf.heads import ProjectionHead, StudentTAssignment
from mixem_tf.losses import NTXentLoss, dec_target, kl_divergence
from mixem_tf.methods.base import CLEAN, ClusteringMethod
from mixem_tf.methods.declarations.cdec import CDECDeclaration

__all__ = ["CDEC"]

@keras.saving.register_keras_serializable("mixem_tf")
class CDEC(CDECDeclaration, ClusteringMethod):
    """Backbone + instance projection head (512 → 512 → ReLU → 128, L2) + DEC centres in h.

    Example:
        >>> model = CDEC(build_backbone("resnet34", (32, 32, 3), stem="imagenet"),
        ...              CDEC.augmentation("cifar10"), num_clusters=10)
    """

    views = (CLEAN, "a", "b")
    loss_names = ("nt_xent", "cluster", "anchor")
    feature_names = ("h", "z", "q")
    readout_features = ("h", "z")
    own_readouts = (("q", "argmax"),)
    embedding_feature = "z"

    def __init__(self, backbone, augment_config, **kwargs):
        super().__init__(backbone, augment_config, **kwargs)
        self.projection = ProjectionHead(hidden_dim=self.options.hidden_dim,
                                         out_dim=self.options.projection_dim)
        self.assignment = StudentTAssignment(self.num_clusters, self.options.student_t_alpha)
        self.nt_xent = NTXentLoss(self.options.temperature)

    def forward(self, images, training):
        h = self.backbone(images, training=training)
        z = self.projection(h)
        z = z / ops.maximum(ops.sqrt(ops.sum(ops.square(z), axis=-1, keepdims=True)), 1e-12)
        return {"h": h, "z": z, "q": self.assignment(h)}

    def loss_terms(self, outputs):
        clean, a, b = (outputs[name] for name in self.views)
        anchor = ops.stop_gradient(clean["q"])
        terms = {"nt_xent": self.nt_xent(a["z"], b["z"]),
                 "cluster": kl_divergence(dec_target(clean["q"]), clean["q"]),
                 "anchor": kl_divergence(anchor, a["q"]) + kl_divergence(anchor, b["q"])}
        weights = {"nt_xent": self.options.instance_weight,
                   "cluster": self.options.cluster_weight, "anchor": self.options.anchor_weight}
        return {name: weights[name] * value for name, value in terms.items()}

    def initialize_state(self, images):
        """Centres from K-means on h of the clean training images (the backbone as it is now:
        untrained, or a SimCLR run's with --init-from)."""
        from mixem_tf.cluster import SKLEARN, kmeans

        h = self.predict(images, batch_size=256, verbose=0)["h"]
        centres = kmeans(h, self.num_clusters, settings=SKLEARN, seed=self.seed).centroids
        self.assignment.centres.assign(centres.astype(np.float32))

    def monitors(self, images, out_dir):
        from mixem_tf.callbacks import ClusterSizeMonitor
        from mixem_tf.runs import OCCUPANCY_FILE

        return [ClusterSizeMonitor(images[:2048], "q", out_dir and out_dir / OCCUPANCY_FILE,
                                   what="centre", advice="start from a SimCLR run with "
                                   "--init-from, or raise --cluster-weight")]
