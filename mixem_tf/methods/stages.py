"""What SCAN's two stages share: they refine a trained run of any method (`--init-from`).

SCAN (Van Gansbeke et al., arXiv 2005.12320; docs/METHODS.md, "SCAN and self-labelling") adds
a K-way linear softmax head on the backbone and trains the whole network further. A stage
takes the data, resolution, backbone and K of its source run (`source_settings`), refuses a
source of another dataset, resolution, backbone or K before anything is written
(`check_source`), starts its backbone from the source's checkpoint (the training loop's
`--init-from`), and reads the source's clusters where it needs them. Its default read-out is
the head's argmax (exported like cdec's: `probabilities` = the softmax); K-means on h stays in
the read-out table.
"""

from __future__ import annotations

import numpy as np
from keras import ops

from mixem_tf.augment.strong import StrongAugmenter
from mixem_tf.heads import ClusterHead
from mixem_tf.methods.base import ClusteringMethod

__all__ = ["SourceStage", "source_assignments"]

def source_assignments(source_dir, images, choice: str | None = None):
    """(cluster ids of `images` [N], features [N, D], read-out) under the source run's read-out
    `choice` (None: its default), computed by the source's own model. The features are the
    read-out's space (its feature, L2-normalised if it says so); for an argmax read-out, the
    method's `embedding_feature` (what its export serves as embedding), L2-normalised."""
    from mixem_tf.cluster import l2_normalize
    from mixem_tf.readouts import load_readout
    from mixem_tf.runs import load_run

    readout = load_readout(source_dir, choice)
    model = load_run(source_dir, flag="--init-from")[0]
    computed = {name: np.asarray(value) for name, value in
                model.predict(images, batch_size=256, verbose=0).items()}
    if readout.head == "argmax":
        features = l2_normalize(computed[model.embedding_feature])
    else:
        features = readout.space(computed)
    return readout.assign(computed), features, readout


class SourceStage(ClusteringMethod):
    """Backbone + `ClusterHead`; a stage of SCAN started from another run (see the module;
    its declaration: `declarations.stages.StageDeclaration`)."""

    feature_names = ("h", "p")
    readout_features = ("h",)
    own_readouts = (("p", "argmax"),)
    embedding_feature = "h"

    def __init__(self, backbone, augment_config, **kwargs):
        super().__init__(backbone, augment_config, **kwargs)
        self.cluster_head = ClusterHead(self.num_clusters)
        self.strong_augmenter = StrongAugmenter(augment_config, num_ops=self.options.strong_ops,
                                                cutout_fraction=self.options.cutout,
                                                seed=self.seed + 1)

    def forward(self, images, training):
        h = self.backbone(images, training=training)
        logits = self.cluster_head(h)
        return {"h": h, "logits": logits, "p": ops.softmax(logits, axis=-1)}

    def fit_head(self, images, labels) -> float:
        """Sets the head to a multinomial logistic regression of `labels` on h of the clean
        `images` (the backbone as it is now), so its argmax starts at those clusters; returns
        the fraction of `labels` the head reproduces."""
        from sklearn.linear_model import LogisticRegression

        h = np.asarray(self.predict(images, batch_size=256, verbose=0)["h"], np.float64)
        present = np.unique(labels)
        fitted = LogisticRegression(max_iter=300).fit(h, labels)
        kernel = np.zeros((h.shape[1], self.num_clusters))
        bias = np.full(self.num_clusters, -1e3 if len(present) < self.num_clusters else 0.0)
        if len(present) == 2:  # scikit-learn's binary model: one logit for the second class
            kernel[:, present[1]], bias[present] = fitted.coef_[0], (0.0, fitted.intercept_[0])
        else:
            kernel[:, present], bias[present] = fitted.coef_.T, fitted.intercept_
        self.cluster_head.linear.kernel.assign(kernel.astype(np.float32))
        self.cluster_head.linear.bias.assign(bias.astype(np.float32))
        return float(np.mean(np.argmax(h @ kernel + bias, axis=1) == labels))

    def copy_head(self, source_dir) -> bool:
        """Copies the source run's cluster head if it has one (a stage's run); returns whether
        it did."""
        from mixem_tf.checkpoints import copy_variables
        from mixem_tf.runs import load_run

        source = load_run(source_dir, flag="--init-from")[0]
        if not isinstance(source, SourceStage):
            return False
        copy_variables(source.cluster_head.variables, self.cluster_head.variables,
                       "cluster head")
        return True
