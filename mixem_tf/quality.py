"""Label-free scores of a clustering: how far to trust each cluster when there are no labels.

Every score is computed from the images and the model only, per cluster and per run:

- `size` and `share`: the cluster's images and their share of all.
- `confidence`: the mean probability of the assigned cluster (the read-out's calibrated
  probabilities, `mixem_tf.calibration`).
- `stability`: the share of the cluster's images whose augmented copy (the method's own view
  pipeline, a fixed seed) falls in the same cluster. A cluster that follows image content
  survives the nuisance the method was trained to ignore; one that splits under augmentation
  was drawn through a region the views move images across. The run's stability is the share
  of all images that stay; its `kappa` is that share beyond chance (Cohen's κ between the
  clean and augmented clusters), which a collapsed clustering (one cluster holding nearly
  everything: trivially stable) cannot fake.
- `separation`: the mean silhouette (Rousseeuw 1987) of the cluster's images on the read-out's
  feature (L2-normalised if the read-out is): near 1 when the cluster is tight and far from
  the others, near 0 or below when it borders or overlaps another.

Silhouettes cost O(N²), so they are measured on a seeded sample of at most `MAX_IMAGES`
images; the other scores use every image given.

`compare_to_pixels` sets a run's scores beside K-means on raw pixels under the same views,
and says when training bought nothing by that measure (docs/BENCHMARKS.md, "Trusting
clusters without labels", measures how often this verdict agrees with ACC).

Example:
    >>> evidence = ClusterEvidence(clusters, augmented, probabilities, features)
    >>> run_scores(evidence)["stability"], cluster_scores(evidence)[0]["separation"]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["COLLAPSED_SHARE", "MAX_IMAGES", "SCORE_NAMES", "STABILITY_MARGIN", "TABLE_SCORES",
           "ClusterEvidence", "cluster_scores", "compare_to_pixels", "kappa", "run_scores",
           "sample_indices"]

MAX_IMAGES = 2000
#: The run-level scores, in the order reports show them.
SCORE_NAMES = ("stability", "kappa", "separation", "confidence", "largest_share")
#: The scores a read-out table shows beside its sizes or ACC/NMI/ARI.
TABLE_SCORES = ("stability", "kappa", "separation", "confidence")
#: How much more stable beyond chance (κ) than pixels a model's clusters must be to count
#: as "better".
STABILITY_MARGIN = 0.05
#: A clustering whose largest cluster holds more than this share counts as collapsed.
COLLAPSED_SHARE = 0.5


@dataclass
class ClusterEvidence:
    """What the scores read of one read-out on a set of images (no labels).

    Attributes:
        clusters: the read-out's cluster ids of the clean images, int [N].
        augmented: its cluster ids of one augmented copy of each image, int [N].
        probabilities: its soft assignment of the clean images, float [N, K].
        features: the read-out's feature of the clean images, in the space it clusters
            (L2-normalised if it is), float [N, D].
    """

    clusters: np.ndarray
    augmented: np.ndarray
    probabilities: np.ndarray
    features: np.ndarray

    def __post_init__(self):
        self.clusters = np.asarray(self.clusters, np.int64)
        self.augmented = np.asarray(self.augmented, np.int64)
        self.probabilities = np.asarray(self.probabilities, np.float64)
        self.features = np.asarray(self.features, np.float64).reshape(len(self.features), -1)
        n = len(self.clusters)
        if self.clusters.ndim != 1 or n == 0:
            raise ValueError(f"clusters must be a non-empty 1-D array, got {self.clusters.shape}")
        shapes = {"augmented": (len(self.augmented),), "probabilities": self.probabilities.shape[:1],
                  "features": self.features.shape[:1]}
        for name, shape in shapes.items():
            if shape != (n,):
                raise ValueError(f"{name} has {shape[0]} rows for {n} images")
        if self.probabilities.ndim != 2 or self.clusters.max() >= self.probabilities.shape[1]:
            raise ValueError(f"probabilities {self.probabilities.shape} do not cover cluster "
                             f"id {self.clusters.max()}")

    @property
    def num_clusters(self) -> int:
        return int(self.probabilities.shape[1])

    @property
    def confidence(self) -> np.ndarray:
        """The probability of each image's own cluster [N]."""
        return self.probabilities[np.arange(len(self.clusters)), self.clusters]


def sample_indices(count: int, limit: int = MAX_IMAGES, seed: int = 0) -> np.ndarray:
    """Sorted indices of a seeded sample of at most `limit` of `count` items (all if fewer)."""
    if count <= limit:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, limit, replace=False))


def _silhouettes(evidence: ClusterEvidence, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(sampled indices, silhouette of each): 0 for every image when fewer than two clusters
    are occupied in the sample (the silhouette is undefined there)."""
    from sklearn.metrics import silhouette_samples

    index = sample_indices(len(evidence.clusters), seed=seed)
    clusters = evidence.clusters[index]
    if np.unique(clusters).size < 2:
        return index, np.zeros(index.size)
    return index, silhouette_samples(evidence.features[index], clusters)


def cluster_scores(evidence: ClusterEvidence, seed: int = 0) -> list[dict]:
    """One dict per cluster 0..K-1: cluster, size, share, confidence, stability, separation
    (None for the scores of an empty cluster, or a cluster outside the silhouette sample)."""
    index, silhouettes = _silhouettes(evidence, seed)
    sampled = evidence.clusters[index]
    confidence = evidence.confidence
    stays = evidence.augmented == evidence.clusters
    total = len(evidence.clusters)
    rows = []
    for k in range(evidence.num_clusters):
        members = evidence.clusters == k
        size = int(members.sum())
        in_sample = sampled == k
        rows.append({
            "cluster": k, "size": size, "share": size / total,
            "confidence": float(confidence[members].mean()) if size else None,
            "stability": float(stays[members].mean()) if size else None,
            "separation": float(silhouettes[in_sample].mean()) if in_sample.any() else None,
        })
    return rows


def kappa(clusters: np.ndarray, augmented: np.ndarray, num_clusters: int) -> float:
    """Cohen's κ of two assignments of the same images: (agreement − chance) / (1 − chance),
    chance being Σ_k share_k(clean) · share_k(augmented); 0 when chance is 1."""
    clean = np.bincount(clusters, minlength=num_clusters) / clusters.size
    views = np.bincount(augmented, minlength=num_clusters) / augmented.size
    chance = float(clean @ views)
    observed = float(np.mean(clusters == augmented))
    return 0.0 if chance >= 1.0 else (observed - chance) / (1.0 - chance)


def run_scores(evidence: ClusterEvidence, seed: int = 0) -> dict:
    """The run's scores: stability (share of all images that stay in their cluster when
    augmented), kappa (that share beyond chance), separation (mean silhouette), confidence
    (mean), largest_share, and the number of empty clusters."""
    _, silhouettes = _silhouettes(evidence, seed)
    sizes = np.bincount(evidence.clusters, minlength=evidence.num_clusters)
    return {"stability": float(np.mean(evidence.augmented == evidence.clusters)),
            "kappa": kappa(evidence.clusters, evidence.augmented, evidence.num_clusters),
            "separation": float(silhouettes.mean()),
            "confidence": float(evidence.confidence.mean()),
            "largest_share": float(sizes.max() / sizes.sum()),
            "empty_clusters": int(np.count_nonzero(sizes == 0))}


def compare_to_pixels(model: dict, pixels: dict) -> str | None:
    """A warning when the model's clusters are collapsed, or not more stable beyond chance
    (κ) under the method's views than K-means on raw pixels (by `STABILITY_MARGIN`); None
    otherwise. Both are `run_scores`.

    Stability is the measure compared because it means the same in both spaces (the share of
    images a view moves to another cluster), chance-corrected so that uneven cluster sizes
    do not pass for stability; a silhouette depends on the space it is measured in.
    """
    advice = ("Try more epochs (--resume --epochs N), a backbone from a longer run "
              "(--init-from RUN), a smaller backbone (--backbone convnet), or another --method.")
    if model["largest_share"] > COLLAPSED_SHARE:
        return (f"warning: the clustering has collapsed: one cluster holds "
                f"{model['largest_share']:.0%} of the images. {advice}")
    if model["kappa"] >= pixels["kappa"] + STABILITY_MARGIN:
        return None
    return (f"warning: the trained clusters are no more stable under the method's views than "
            f"K-means on raw pixels (stability beyond chance {model['kappa']:.2f} against "
            f"{pixels['kappa']:.2f}): training may have bought nothing. {advice}")
