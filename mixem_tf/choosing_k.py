"""Choosing the number of clusters K without labels, on a trained run's features.

For every K of a range, a read-out (K-means on one feature) is fitted on a seeded sample of
the evaluation features and judged by label-free criteria (`mixem_tf.criteria`); each criterion
has its own rule for turning its values into a K:

| criterion | rule | source |
| --- | --- | --- |
| `silhouette` | the K of the highest mean silhouette (cosine) | Rousseeuw 1987 |
| `prediction_strength` | the largest K whose strength is at least 0.8 | Tibshirani & Walther 2005 |
| `eigengap` | the K after which the k-NN graph Laplacian's spectrum jumps most | von Luxburg 2007 |
| `stability` | the K whose clusters best survive the method's own views (ARI) | the tuner's objective |

The default criterion (`DEFAULT_CRITERION`, the eigengap) is the one that chose best across
the measured cases of docs/BENCHMARKS.md ("Choosing K"): the smallest mean distance to the
true K, and never the coarsest split where the embedding is weak, as silhouette and stability
did. Labels, when the data has them, only add ACC and
NMI per K to the table as a check; they never enter a choice.

Example:
    >>> choice = choose_k(ReadoutSpec("z", True, "kmeans"), features, range(2, 21))
    >>> choice.k, choice.table[0]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mixem_tf import criteria
from mixem_tf.cluster import KMeansSettings, assign, kmeans, l2_normalize
from mixem_tf.metrics import evaluate_clustering

__all__ = ["CRITERIA", "DEFAULT_CRITERION", "DEFAULT_RANGE", "KChoice", "choose_k",
           "parse_clusters"]

#: name → what it measures (the CLIs' --criterion choices).
CRITERIA = {
    "silhouette": "highest mean silhouette (cosine) of the clusters",
    "prediction_strength": "largest K whose prediction strength is >= 0.8 (Tibshirani & "
                           "Walther 2005)",
    "eigengap": "largest gap in the k-NN graph Laplacian's spectrum (von Luxburg 2007)",
    "stability": "highest ARI between clusters of clean and augmented images",
}
DEFAULT_CRITERION = "eigengap"
DEFAULT_RANGE = (2, 20)
STRENGTH_THRESHOLD = 0.8
MAX_IMAGES = 3000
SCAN_KMEANS = KMeansSettings(n_init=3, max_iter=100)


def parse_clusters(text: str) -> tuple[int, int] | int:
    """`--clusters`: "K" → K; "auto" → `DEFAULT_RANGE`; "A..B" → (A, B).

    Raises:
        ValueError: anything else, K or A below 2, or B not above A.
    """
    text = str(text).strip()
    if text == "auto":
        return DEFAULT_RANGE
    low, dots, high = text.partition("..")
    try:
        if not dots:
            k = int(text)
            if k < 2:
                raise ValueError
            return k
        low, high = int(low), int(high)
    except ValueError:
        raise ValueError(f"--clusters {text!r}: expected K >= 2, 'auto' (K from "
                         f"{DEFAULT_RANGE[0]} to {DEFAULT_RANGE[1]}, chosen without labels) or "
                         "a range such as 2..30") from None
    if low < 2 or high <= low:
        raise ValueError(f"--clusters {text}: a range A..B needs 2 <= A < B")
    return low, high


@dataclass
class KChoice:
    """What `choose_k` measured and chose.

    Attributes:
        table: one row per K: "K", each criterion's value (eigengap None where the spectrum
            is too short), and "acc"/"nmi" when labels were given.
        chosen: criterion → the K its rule picks.
        criterion: the criterion whose K is `k`.
        k: the chosen K.
        images: how many images the criteria were measured on.
    """

    table: list[dict]
    chosen: dict
    criterion: str
    k: int
    images: int


def _sample(count: int, seed: int) -> np.ndarray:
    if count <= MAX_IMAGES:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, MAX_IMAGES, replace=False))


def _space(values, normalize: bool) -> np.ndarray:
    values = np.asarray(values, np.float64)
    return l2_normalize(values) if normalize else values


def choose_k(spec, features: dict, ks, *, augmented: dict | None = None, labels=None,
             criterion: str = DEFAULT_CRITERION, seed: int = 0,
             progress=None) -> KChoice:
    """Measures every criterion for each K in `ks` on K-means read-outs of `spec`'s feature.

    Args:
        spec: the read-out to refit (`mixem_tf.readouts.ReadoutSpec` of a centroid kind; its
            feature and normalisation are used).
        features: the run's evaluation features (name → [N, D]).
        ks: the candidate Ks (each >= 2 and below the number of images).
        augmented: the same features of one augmented view of each image; without it the
            `stability` criterion is skipped.
        labels: ground truth for the ACC/NMI check columns, or None.
        criterion: whose rule picks `k` (a key of `CRITERIA`).
        progress: called with each finished table row (for printing).

    Raises:
        ValueError: an unknown criterion, a K the data cannot hold, or `stability` without
            augmented features.
    """
    if criterion not in CRITERIA:
        raise ValueError(f"--criterion {criterion!r}: choose from {', '.join(CRITERIA)}")
    if criterion == "stability" and augmented is None:
        raise ValueError("--criterion stability needs the augmented view's features")
    ks = sorted(int(k) for k in ks)
    rows = _sample(len(features[spec.feature]), seed)
    space = _space(features[spec.feature], spec.normalize)
    sample = space[rows]
    if ks[0] < 2 or ks[-1] >= len(sample):
        raise ValueError(f"K from {ks[0]} to {ks[-1]} does not fit {len(sample)} images "
                         "(2 <= K < images)")
    views = _space(augmented[spec.feature], spec.normalize)[rows] if augmented else None
    spectrum = criteria.eigengap_spectrum(sample, ks[-1])
    table = []
    for k in ks:
        fitted = kmeans(sample, k, settings=SCAN_KMEANS, seed=seed)
        clusters = fitted.labels
        row = {"K": k,
               "silhouette": criteria.silhouette(sample, clusters, seed,
                                                 refuse_collapsed=False),
               "prediction_strength": criteria.prediction_strength(sample, k, seed=seed),
               "eigengap": float(spectrum[k] - spectrum[k - 1]) if k < len(spectrum) else None}
        if views is not None:
            row["stability"] = criteria.stability(clusters, assign(views, fitted.centroids),
                                                  refuse_collapsed=False)
        if labels is not None:
            scores = evaluate_clustering(np.asarray(labels)[rows], clusters)
            row.update(acc=scores["acc"], nmi=scores["nmi"])
        table.append(row)
        if progress:
            progress(row)
    chosen = {name: _rule(name, table) for name in CRITERIA if name in table[0]}
    return KChoice(table, chosen, criterion, chosen[criterion], len(sample))


def _rule(name: str, table: list[dict]) -> int:
    """The K a criterion's rule picks from its column."""
    scored = [(row["K"], row[name]) for row in table if row[name] is not None]
    if not scored:
        return table[0]["K"]
    if name == "prediction_strength":
        strong = [k for k, value in scored if value >= STRENGTH_THRESHOLD]
        return max(strong) if strong else max(scored, key=lambda kv: kv[1])[0]
    return max(scored, key=lambda kv: kv[1])[0]
