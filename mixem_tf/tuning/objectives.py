"""Label-free objectives of a trained trial: from its images and model only, never labels.

Each objective is one of `mixem_tf.criteria` applied to the trial's default read-out on a fixed,
seeded subset of at most `MAX_IMAGES` evaluation images:

- `stability`: ARI between the clusters of the clean images and of an augmented copy of each
  (the method's own view pipeline, a fixed seed);
- `consensus`: NMI with the consensus of the other trials (Helfmann et al. 2018). During a
  study a trial is scored against the trials before it (the first scores 0); the choice at the
  end scores each finished trial against all the others (`criteria.final_consensus`);
- `silhouette`: the silhouette of the read-out's clusters on its L2-normalised feature (for a
  method's own argmax read-out: its `embedding_feature`), cosine geometry.

Every objective first refuses a degenerate clustering (`CollapsedClusteringError`).

Example:
    >>> evidence = trial_evidence(model, images, readout)   # clusters of clean/augmented
    >>> stability(evidence), silhouette(evidence)

scikit-learn and SciPy are imported inside the objectives: `trainers.tune --help` lists the
objectives without loading them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mixem_tf import criteria
from mixem_tf.criteria import CollapsedClusteringError, check_not_collapsed
from mixem_tf.features import embed

__all__ = ["MAX_IMAGES", "OBJECTIVES", "CollapsedClusteringError", "TrialEvidence",
           "check_not_collapsed", "consensus", "objective_images", "silhouette", "stability",
           "trial_evidence"]

MAX_IMAGES = 2000


@dataclass
class TrialEvidence:
    """What the objectives read of one trial, on the objective images.

    Attributes:
        clusters: the default read-out's cluster ids of the clean images [N].
        augmented: its cluster ids of one augmented copy of each image [N].
        features: the features the silhouette is measured on [N, D].
        num_clusters: K.
    """

    clusters: np.ndarray
    augmented: np.ndarray
    features: np.ndarray
    num_clusters: int


def objective_images(images: np.ndarray, seed: int = 0) -> np.ndarray:
    """The images the objectives use: all, or a seeded sample of `MAX_IMAGES` (in order)."""
    if len(images) <= MAX_IMAGES:
        return images
    chosen = np.random.default_rng(seed).choice(len(images), MAX_IMAGES, replace=False)
    return images[np.sort(chosen)]


def trial_evidence(model, images: np.ndarray, readout, *, seed: int = 0) -> TrialEvidence:
    """Clean and augmented clusters of `images` under `readout` (a `mixem_tf.readouts.Readout`)
    and the silhouette's features. Reads no labels."""
    clean = embed(model, images)
    augmented = embed(model, images, augment_seed=seed)
    feature = readout.feature if readout.head == "centroids" else model.embedding_feature
    return TrialEvidence(clusters=readout.assign(clean), augmented=readout.assign(augmented),
                         features=clean[feature], num_clusters=readout.num_clusters)


def stability(evidence: TrialEvidence) -> float:
    """ARI between the clusters of the clean and of the augmented images."""
    return criteria.stability(evidence.clusters, evidence.augmented)


def silhouette(evidence: TrialEvidence, seed: int = 0) -> float:
    """Silhouette of the clusters on the L2-normalised features (cosine distance)."""
    return criteria.silhouette(evidence.features, evidence.clusters, seed)


def consensus(evidence: TrialEvidence, others, seed: int = 0) -> float:
    """NMI of the trial's clusters with the consensus of `others` (cluster-id arrays); 0.0
    when there are no others yet."""
    return criteria.consensus(evidence.clusters, others, evidence.num_clusters, seed)


#: name → what it measures (the CLI's --objective choices; all are maximised).
OBJECTIVES = {
    "stability": "ARI between clusters of clean and augmented images",
    "consensus": "NMI with the consensus of the other trials (Helfmann et al. 2018)",
    "silhouette": "silhouette on the L2-normalised read-out features",
}
