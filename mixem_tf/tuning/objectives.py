"""Label-free objectives of a trained trial: from its images and model only, never labels.

- `stability`: ARI between the default read-out's clusters of the clean images and of an
  augmented copy of each (the method's own view pipeline, a fixed seed); a clustering that
  follows image content rather than nuisance should survive the augmentations it was trained
  to ignore.
- `consensus`: NMI between the trial's clusters and the consensus of the other trials
  (Helfmann, von Lindheim, Klus, Koltai & Schütte 2018, "On hyperparameter search in cluster
  ensembles"): K-means on the trials' one-hot cluster ids side by side, whose squared
  distance between two images is twice the number of trials that separate them, i.e. a
  clustering of the co-association matrix in O(N · trials · K). During a study a trial is
  scored against the trials before it (the first scores 0); the choice at the end scores each
  finished trial against all the others.
- `silhouette`: the silhouette of the default read-out's clusters on its L2-normalised
  feature (for a method's own argmax read-out: its `embedding_feature`), cosine geometry.

Every objective first refuses a degenerate clustering (`CollapsedClusteringError`: one
cluster holding more than half of the images, or a single cluster), which augmentation
stability and consensus would otherwise reward. All objectives are computed on a fixed,
seeded subset of at most `MAX_IMAGES` evaluation images.

Example:
    >>> evidence = trial_evidence(model, images, readout_row)   # clusters of clean/augmented
    >>> stability(evidence), silhouette(evidence)

scikit-learn and SciPy are imported inside the objectives: `trainers.tune --help` lists the
objectives without loading them.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from mixem_tf.cluster import KMeansSettings, assign, kmeans, l2_normalize

__all__ = ["MAX_IMAGES", "OBJECTIVES", "CollapsedClusteringError",
           "TrialEvidence", "check_not_collapsed", "consensus", "consensus_clustering",
           "final_consensus", "objective_images", "silhouette", "stability", "trial_evidence"]

MAX_IMAGES = 2000
MAX_CLUSTER_SHARE = 0.5
CONSENSUS_KMEANS = KMeansSettings(n_init=10, max_iter=100)


class CollapsedClusteringError(ValueError):
    """The trial's clustering is degenerate: one cluster holds more than half of the images."""


@dataclass
class TrialEvidence:
    """What the objectives read of one trial, on the objective images.

    Attributes:
        clusters: the default read-out's cluster ids of the clean images [N].
        augmented: its cluster ids of one augmented copy of each image [N].
        features: the L2-normalised features the silhouette is measured on [N, D].
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


def check_not_collapsed(clusters: np.ndarray) -> None:
    """CollapsedClusteringError when one cluster holds more than half of the images."""
    sizes = np.bincount(np.asarray(clusters, np.int64))
    share = sizes.max() / sizes.sum()
    if share > MAX_CLUSTER_SHARE or np.count_nonzero(sizes) < 2:
        raise CollapsedClusteringError(
            f"collapsed clustering: one cluster holds {share:.0%} of the images "
            f"(more than {MAX_CLUSTER_SHARE:.0%})")


def _readout_clusters(features: dict, row: dict) -> np.ndarray:
    """A read-out row's cluster ids of `features`: nearest centroid, or a method's argmax."""
    values = np.asarray(features[row["feature"]], np.float64)
    if row.get("centroids") is not None:
        return assign(values, row["centroids"], normalize=row["normalize"])
    return np.argmax(values, axis=-1).astype(np.int64)


def trial_evidence(model, images: np.ndarray, row: dict, *, seed: int = 0,
                   batch_size: int = 256) -> TrialEvidence:
    """Clean and augmented clusters of `images` under read-out `row` (a `readout_table` row
    with its centroids), and the silhouette's features. Reads no labels."""
    from keras import ops

    from mixem_tf.augment import Augmenter

    augmenter = Augmenter(model.augment_config, seed=seed)
    clean, augmented = [], []
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size]
        clean.append(model.embed(batch))
        views = model.forward(augmenter(batch), training=False)
        augmented.append({name: views[name] for name in model.feature_names})
    clean, augmented = ({name: np.concatenate([ops.convert_to_numpy(part[name])
                                               for part in parts])
                         for name in model.feature_names} for parts in (clean, augmented))
    feature = row["feature"] if row.get("centroids") is not None else model.embedding_feature
    return TrialEvidence(clusters=_readout_clusters(clean, row),
                         augmented=_readout_clusters(augmented, row),
                         features=l2_normalize(clean[feature]),
                         num_clusters=model.num_clusters)


def stability(evidence: TrialEvidence) -> float:
    """ARI between the clusters of the clean and of the augmented images."""
    from mixem_tf.metrics import adjusted_rand_index

    check_not_collapsed(evidence.clusters)
    return adjusted_rand_index(evidence.clusters, evidence.augmented)


def silhouette(evidence: TrialEvidence, seed: int = 0) -> float:
    """Silhouette of the clusters on the L2-normalised features (cosine distance)."""
    from sklearn.metrics import silhouette_score

    check_not_collapsed(evidence.clusters)
    return float(silhouette_score(evidence.features, evidence.clusters, metric="cosine",
                                  random_state=seed))


def consensus_clustering(clusterings, num_clusters: int, seed: int = 0) -> np.ndarray:
    """The consensus of several clusterings of the same images: K-means on their one-hot
    cluster ids side by side (a clustering of the co-association matrix)."""
    from sklearn.exceptions import ConvergenceWarning

    clusterings = [np.asarray(c, np.int64) for c in clusterings]
    onehot = np.concatenate([np.eye(int(c.max()) + 1)[c] for c in clusterings], axis=1)
    with warnings.catch_warnings():  # few trials: many images share one row, fewer distinct
        warnings.simplefilter("ignore", ConvergenceWarning)  # rows than K is expected
        return kmeans(onehot, num_clusters, settings=CONSENSUS_KMEANS, seed=seed).labels


def consensus(evidence: TrialEvidence, others, seed: int = 0) -> float:
    """NMI of the trial's clusters with the consensus of `others` (cluster-id arrays); 0.0
    when there are no others yet."""
    from mixem_tf.metrics import normalized_mutual_info

    check_not_collapsed(evidence.clusters)
    if not len(others):
        return 0.0
    return normalized_mutual_info(
        consensus_clustering(others, evidence.num_clusters, seed), evidence.clusters)


def final_consensus(clusterings: dict, num_clusters: int, seed: int = 0) -> dict:
    """{trial: NMI with the consensus of every other trial} for finished trials' clusters."""
    from mixem_tf.metrics import normalized_mutual_info

    return {trial: normalized_mutual_info(consensus_clustering(
                [c for other, c in clusterings.items() if other != trial], num_clusters,
                seed), clusters) if len(clusterings) > 1 else 0.0
            for trial, clusters in clusterings.items()}


#: name → what it measures (the CLI's --objective choices; all are maximised).
OBJECTIVES = {
    "stability": "ARI between clusters of clean and augmented images",
    "consensus": "NMI with the consensus of the other trials (Helfmann et al. 2018)",
    "silhouette": "silhouette on the L2-normalised read-out features",
}
