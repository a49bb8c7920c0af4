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
