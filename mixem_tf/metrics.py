"""Clustering metrics: ACC (Hungarian matching), NMI (arithmetic) and ARI (docs/METHODS.md §5.2).

Labels may be any integers (not necessarily 0..K-1) and the number of clusters may differ from
the number of classes. ACC uses a one-to-one Hungarian matching by default (the papers'
definition: with more clusters than classes the unmatched clusters count as errors); the
many-to-one "majority" mapping is available for over-clustering studies.

Example:
    >>> evaluate_clustering([0, 0, 1, 1], [1, 1, 0, 0])
    {'acc': 1.0, 'nmi': 1.0, 'ari': 1.0}
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

__all__ = [
    "adjusted_rand_index",
    "cluster_accuracy",
    "cluster_sizes",
    "cluster_to_class",
    "contingency_matrix",
    "evaluate_clustering",
    "largest_cluster_fraction",
    "normalized_mutual_info",
]


def _as_label_pair(y_true, y_pred):
    """Validates two label vectors and returns them as 1-D int64 arrays."""
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if y_true.ndim != 1 or y_pred.ndim != 1:
        raise ValueError(
            f"labels must be 1-D, got shapes {y_true.shape} (true) and {y_pred.shape} (predicted)"
        )
    if y_true.shape[0] != y_pred.shape[0]:
        raise ValueError(
            f"label vectors differ in length: {y_true.shape[0]} true vs {y_pred.shape[0]} predicted"
        )
    if y_true.shape[0] == 0:
        raise ValueError("cannot score an empty clustering")
    for name, y in (("true", y_true), ("predicted", y_pred)):
        if not np.issubdtype(y.dtype, np.integer):
            if not np.issubdtype(y.dtype, np.floating) or not np.all(np.equal(np.mod(y, 1), 0)):
                raise ValueError(f"{name} labels must be integers, got dtype {y.dtype}")
    return y_true.astype(np.int64), y_pred.astype(np.int64)


def contingency_matrix(y_true, y_pred):
    """Counts [n_clusters, n_classes] and the sorted cluster and class ids they index."""
    y_true, y_pred = _as_label_pair(y_true, y_pred)
    classes, true_idx = np.unique(y_true, return_inverse=True)
    clusters, pred_idx = np.unique(y_pred, return_inverse=True)
    counts = np.zeros((clusters.size, classes.size), dtype=np.int64)
    np.add.at(counts, (pred_idx, true_idx), 1)
    return counts, clusters, classes


def cluster_accuracy(y_true, y_pred, mapping: str = "hungarian") -> float:
    """Best-map accuracy of a clustering against ground-truth classes.

    Args:
        mapping: "hungarian" maps clusters to classes one-to-one (scipy's
            `linear_sum_assignment` on the negated contingency matrix), the papers' ACC;
            "majority" maps each cluster to its most frequent class (many-to-one).
    """
    counts, _, _ = contingency_matrix(y_true, y_pred)
    if mapping == "hungarian":
        rows, cols = linear_sum_assignment(-counts)
        correct = counts[rows, cols].sum()
    elif mapping == "majority":
        correct = counts.max(axis=1).sum()
    else:
        raise ValueError(f"mapping must be 'hungarian' or 'majority', got {mapping!r}")
    return float(correct / counts.sum())


def normalized_mutual_info(y_true, y_pred) -> float:
    """NMI with arithmetic averaging, pinned (sklearn's default since 0.22, docs/METHODS.md
    §5.2)."""
    y_true, y_pred = _as_label_pair(y_true, y_pred)
    return float(normalized_mutual_info_score(y_true, y_pred, average_method="arithmetic"))


def adjusted_rand_index(y_true, y_pred) -> float:
    """Adjusted Rand index (sklearn's `adjusted_rand_score`)."""
    y_true, y_pred = _as_label_pair(y_true, y_pred)
    return float(adjusted_rand_score(y_true, y_pred))


def evaluate_clustering(y_true, y_pred) -> dict[str, float]:
    """ACC, NMI and ARI of one clustering, as a dict with keys "acc", "nmi", "ari"."""
    return {
        "acc": cluster_accuracy(y_true, y_pred),
        "nmi": normalized_mutual_info(y_true, y_pred),
        "ari": adjusted_rand_index(y_true, y_pred),
    }


def cluster_sizes(y_pred, num_clusters: int | None = None) -> np.ndarray:
    """Histogram of cluster ids 0..num_clusters-1 (the degenerate-solution monitor, §5.8)."""
    y_pred = np.asarray(y_pred)
    if y_pred.ndim != 1:
        raise ValueError(f"cluster ids must be 1-D, got shape {y_pred.shape}")
    if y_pred.size and (y_pred.min() < 0):
        raise ValueError("cluster ids must be non-negative")
    minlength = 0 if num_clusters is None else int(num_clusters)
    sizes = np.bincount(y_pred.astype(np.int64), minlength=minlength)
    if num_clusters is not None and sizes.size > num_clusters:
        raise ValueError(f"cluster id {y_pred.max()} is out of range for {num_clusters} clusters")
    return sizes


def largest_cluster_fraction(y_pred) -> float:
    """Fraction of samples in the most populated cluster (warn above about 0.5, §5.8)."""
    sizes = cluster_sizes(y_pred)
    return float(sizes.max() / sizes.sum()) if sizes.sum() else 0.0


def cluster_to_class(y_true, y_pred) -> dict[int, dict[str, float | int]]:
    """For each cluster: its majority class, purity (share of that class) and size."""
    counts, clusters, classes = contingency_matrix(y_true, y_pred)
    table = {}
    for row, cluster in enumerate(clusters):
        size = int(counts[row].sum())
        best = int(np.argmax(counts[row]))
        table[int(cluster)] = {
            "majority_label": int(classes[best]),
            "purity": float(counts[row, best] / size),
            "size": size,
        }
    return table
