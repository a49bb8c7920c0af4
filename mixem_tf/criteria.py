"""Label-free criteria of a clustering: from features and cluster ids only, never labels.

Shared by `trainers.tune` (which trial is best), `trainers.recluster` (which K) and the run's
own report. All are maximised.

- `stability`: ARI between the clusters of clean images and of one augmented view of each
  (the method's own view pipeline): a clustering that follows content rather than nuisance
  survives the augmentations the network was trained to ignore.
- `silhouette`: mean silhouette on L2-normalised features, cosine geometry (Rousseeuw 1987).
- `consensus`: NMI with the consensus of other clusterings of the same images (Helfmann, von
  Lindheim, Klus, Koltai & Schütte 2018): K-means on the clusterings' one-hot ids side by side,
  a clustering of the co-association matrix in O(N · clusterings · K).
- `prediction_strength`: Tibshirani & Walther 2005. Split the images in two halves, cluster
  each; for every test cluster, the share of its pairs that the training half's centroids also
  put together; the minimum over test clusters (clusters of fewer than 2 images skipped),
  averaged over splits. Their rule picks the largest K whose strength is at least 0.8.
- `eigengap`: von Luxburg 2007, §8.3: the eigenvalues of the normalised Laplacian of a
  symmetric k-nearest-neighbour graph; with K well-separated groups the first K are near 0 and
  the gap to the (K+1)-th is large.

`check_not_collapsed` refuses a degenerate clustering (`CollapsedClusteringError`: one cluster
holding more than half of the images, or a single cluster), which stability and consensus
would otherwise reward when the trials compared share one K; choosing among Ks turns it off
(at K = 2 a cluster of over half the images is no sign of collapse).

Example:
    >>> stability(clusters_clean, clusters_augmented), silhouette(features, clusters)
"""

from __future__ import annotations

import warnings

import numpy as np
from mixem_tf.cluster import KMeansSettings, assign, kmeans, l2_normalize
from mixem_tf.metrics import adjusted_rand_index, normalized_mutual_info

__all__ = ["CollapsedClusteringError", "MAX_CLUSTER_SHARE", "check_not_collapsed",
           "consensus", "consensus_clustering", "eigengap_spectrum", "final_consensus",
           "prediction_strength", "silhouette", "stability"]

MAX_CLUSTER_SHARE = 0.5
CONSENSUS_KMEANS = KMeansSettings(n_init=10, max_iter=100)
SPLIT_KMEANS = KMeansSettings(n_init=2, max_iter=100)


class CollapsedClusteringError(ValueError):
    """The clustering is degenerate: one cluster holds more than half of the images."""


def check_not_collapsed(clusters: np.ndarray) -> None:
    """CollapsedClusteringError when one cluster holds more than half of the images."""
    sizes = np.bincount(np.asarray(clusters, np.int64))
    share = sizes.max() / sizes.sum()
    if share > MAX_CLUSTER_SHARE or np.count_nonzero(sizes) < 2:
        raise CollapsedClusteringError(
            f"collapsed clustering: one cluster holds {share:.0%} of the images "
            f"(more than {MAX_CLUSTER_SHARE:.0%})")


def stability(clean: np.ndarray, augmented: np.ndarray, *,
              refuse_collapsed: bool = True) -> float:
    """ARI between the clusters of the clean and of the augmented images."""
    if refuse_collapsed:
        check_not_collapsed(clean)
    return adjusted_rand_index(clean, augmented)


def silhouette(features: np.ndarray, clusters: np.ndarray, seed: int = 0,
               sample: int | None = None, *, refuse_collapsed: bool = True) -> float:
    """Silhouette of `clusters` on `features` after L2 normalisation (cosine distance), on a
    seeded sample of `sample` images when given."""
    from sklearn.metrics import silhouette_score

    if refuse_collapsed:
        check_not_collapsed(clusters)
    return float(silhouette_score(l2_normalize(features), clusters, metric="cosine",
                                  sample_size=sample if sample and sample < len(clusters)
                                  else None, random_state=seed))


def consensus_clustering(clusterings, num_clusters: int, seed: int = 0) -> np.ndarray:
    """The consensus of several clusterings of the same images: K-means on their one-hot
    cluster ids side by side (a clustering of the co-association matrix)."""
    from sklearn.exceptions import ConvergenceWarning

    clusterings = [np.asarray(c, np.int64) for c in clusterings]
    onehot = np.concatenate([np.eye(int(c.max()) + 1)[c] for c in clusterings], axis=1)
    with warnings.catch_warnings():  # few clusterings: many images share one row, fewer
        warnings.simplefilter("ignore", ConvergenceWarning)  # distinct rows than K is expected
        return kmeans(onehot, num_clusters, settings=CONSENSUS_KMEANS, seed=seed).labels


def consensus(clusters: np.ndarray, others, num_clusters: int, seed: int = 0) -> float:
    """NMI of `clusters` with the consensus of `others` (cluster-id arrays); 0.0 when there
    are no others."""
    check_not_collapsed(clusters)
    if not len(others):
        return 0.0
    return normalized_mutual_info(consensus_clustering(others, num_clusters, seed), clusters)


def final_consensus(clusterings: dict, num_clusters: int, seed: int = 0) -> dict:
    """{name: NMI with the consensus of every other clustering} for named clusterings."""
    return {name: normalized_mutual_info(consensus_clustering(
                [c for other, c in clusterings.items() if other != name], num_clusters,
                seed), clusters) if len(clusterings) > 1 else 0.0
            for name, clusters in clusterings.items()}


def prediction_strength(space: np.ndarray, k: int, *, splits: int = 2, seed: int = 0) -> float:
    """Tibshirani & Walther's prediction strength of K-means with K clusters on `space`
    (already in the read-out's geometry), averaged over `splits` random halvings."""
    space = np.asarray(space, np.float64)
    rng = np.random.default_rng(seed)
    values = []
    for split in range(splits):
        order = rng.permutation(len(space))
        train, test = space[order[: len(space) // 2]], space[order[len(space) // 2:]]
        centres = kmeans(train, k, settings=SPLIT_KMEANS, seed=seed + split).centroids
        test_clusters = kmeans(test, k, settings=SPLIT_KMEANS, seed=seed + split).labels
        predicted = assign(test, centres)
        strengths = []
        for cluster in range(k):
            members = predicted[test_clusters == cluster]
            n = len(members)
            if n < 2:
                continue
            counts = np.bincount(members)
            strengths.append(float((counts * (counts - 1)).sum()) / (n * (n - 1)))
        values.append(min(strengths) if strengths else 0.0)
    return float(np.mean(values))


def eigengap_spectrum(space: np.ndarray, max_k: int, *, neighbours: int = 10) -> np.ndarray:
    """The `max_k + 1` smallest eigenvalues of the symmetric normalised Laplacian of the
    k-nearest-neighbour graph of `space` (cosine neighbours, edge weights 1, symmetrised);
    the gap after the K-th eigenvalue is `spectrum[K] - spectrum[K - 1]`."""
    from scipy.sparse import csgraph
    from scipy.sparse.linalg import eigsh
    from sklearn.neighbors import kneighbors_graph

    points = l2_normalize(space)
    graph = kneighbors_graph(points, min(neighbours, len(points) - 1), include_self=False)
    graph = graph.maximum(graph.T)
    laplacian = csgraph.laplacian(graph, normed=True)
    count = min(max_k + 1, len(points) - 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        values = eigsh(laplacian, k=count, sigma=-1e-3, which="LM",
                       return_eigenvectors=False)
    return np.sort(np.clip(values, 0.0, None))
