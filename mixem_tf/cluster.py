"""K-means read-outs on learned (or raw pixel) features (docs/METHODS.md §1.4, §3.4, §5.10).

Two named settings reproduce the papers' evaluation code and scikit-learn's defaults:

- ``OFFICIAL`` (MIX'EM's `cluster_eval.py`): ``max_iter=10``, ``n_init=50`` with k-means++
  seeding ("random init" in the paper's wording), ``n_init=1`` with a given initialisation.
- ``SKLEARN`` (cdec's evaluation, and our default for pixels): ``max_iter=300``,
  ``n_init=10``.

Example:
    >>> result = kmeans(features, 10, settings=OFFICIAL, normalize=True, seed=0)
    >>> result.labels, result.centroids
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "KMeansResult",
    "KMeansSettings",
    "OFFICIAL",
    "SKLEARN",
    "assign",
    "component_init",
    "kmeans",
    "l2_normalize",
    "squared_distances",
]


@dataclass(frozen=True)
class KMeansSettings:
    """K-means iteration budget.

    Attributes:
        n_init: restarts when seeding randomly (a given initialisation always runs once).
        max_iter: Lloyd iterations per restart.
        tol: relative tolerance on centre movement (scikit-learn's meaning).
    """

    n_init: int
    max_iter: int
    tol: float = 1e-4

    def __post_init__(self):
        if self.n_init < 1:
            raise ValueError(f"n_init must be >= 1, got {self.n_init}")
        if self.max_iter < 1:
            raise ValueError(f"max_iter must be >= 1, got {self.max_iter}")
        if self.tol < 0:
            raise ValueError(f"tol must be >= 0, got {self.tol}")


OFFICIAL = KMeansSettings(n_init=50, max_iter=10)
SKLEARN = KMeansSettings(n_init=10, max_iter=300)


@dataclass(frozen=True)
class KMeansResult:
    """Hard assignments [N], centroids [K, D] (in the clustered space) and inertia."""

    labels: np.ndarray
    centroids: np.ndarray
    inertia: float
    n_iter: int


def l2_normalize(features, eps: float = 1e-12) -> np.ndarray:
    """Rows scaled to unit L2 norm; all-zero rows stay zero instead of becoming NaN."""
    features = np.asarray(features, dtype=np.float64)
    norms = np.linalg.norm(features, axis=-1, keepdims=True)
    return features / np.maximum(norms, eps)


def _as_features(features) -> np.ndarray:
    features = np.asarray(features)
    if features.ndim < 2:
        raise ValueError(f"features must be [N, D] (or [N, ...] to flatten), got {features.shape}")
    features = features.reshape(features.shape[0], -1).astype(np.float64)
    if not np.all(np.isfinite(features)):
        raise ValueError("features contain NaN or infinite values")
    return features


def kmeans(
    features,
    num_clusters: int,
    *,
    init="k-means++",
    settings: KMeansSettings = SKLEARN,
    normalize: bool = False,
    seed: int = 0,
) -> KMeansResult:
    """Clusters features with K-means.

    Args:
        features: [N, D] array (images [N, H, W, C] are flattened).
        num_clusters: K >= 2.
        init: "k-means++", "random", or initial centres [K, D] (then one restart only).
        settings: iteration budget, `OFFICIAL` or `SKLEARN` or your own.
        normalize: L2-normalise the features (and a given init) first.
        seed: random state of the seeding.

    Raises:
        ValueError: K < 2, fewer samples than clusters, non-finite features, or an init of
            the wrong shape.
    """
    features = _as_features(features)
    num_clusters = int(num_clusters)
    if num_clusters < 2:
        raise ValueError(f"the number of clusters must be at least 2, got {num_clusters}")
    if features.shape[0] < num_clusters:
        raise ValueError(f"cannot form {num_clusters} clusters from {features.shape[0]} samples")
    if normalize:
        features = l2_normalize(features)
    if isinstance(init, str):
        if init not in ("k-means++", "random"):
            raise ValueError(f"init must be 'k-means++', 'random' or an array, got {init!r}")
        n_init = settings.n_init
    else:
        init = np.asarray(init, dtype=np.float64)
        if init.shape != (num_clusters, features.shape[1]):
            raise ValueError(
                f"initial centres must have shape {(num_clusters, features.shape[1])}, "
                f"got {init.shape}"
            )
        if normalize:
            init = l2_normalize(init)
        n_init = 1
    from sklearn.cluster import KMeans  # loads in seconds: not at import (commands' --help)

    model = KMeans(
        n_clusters=num_clusters,
        init=init,
        n_init=n_init,
        max_iter=settings.max_iter,
        tol=settings.tol,
        random_state=seed,
    )
    labels = model.fit_predict(features)
    return KMeansResult(
        labels=labels.astype(np.int64),
        centroids=model.cluster_centers_,
        inertia=float(model.inertia_),
        n_iter=int(model.n_iter_),
    )


def squared_distances(features, centroids) -> np.ndarray:
    """[N, K] squared Euclidean distances (clipped at 0) of samples to centroids."""
    features = _as_features(features)
    centroids = np.asarray(centroids, dtype=np.float64)
    if centroids.ndim != 2 or centroids.shape[1] != features.shape[1]:
        raise ValueError(
            f"centroids of shape {centroids.shape} do not fit features of dimension "
            f"{features.shape[1]}"
        )
    squared = (
        (features**2).sum(1, keepdims=True) - 2 * features @ centroids.T + (centroids**2).sum(1)
    )
    return np.maximum(squared, 0.0)


def assign(features, centroids, *, normalize: bool = False) -> np.ndarray:
    """Nearest-centroid ids for new samples (centroids come from `kmeans` in the same space)."""
    features = _as_features(features)
    if normalize:
        features = l2_normalize(features)
    return np.argmin(squared_distances(features, centroids), axis=1).astype(np.int64)


SETTINGS_BY_NAME = {"official": OFFICIAL, "sklearn": SKLEARN}


def component_init(features, components, num_clusters: int, *, num_components=None,
                   seed: int = 0) -> np.ndarray:
    """K-means initial centres from mixture components (MIX'EM `cluster_eval.py`, §1.4).

    With as many components as clusters: centre k is the mean feature of the samples whose
    argmax π is k; an empty component gets a centre drawn uniformly between the features'
    per-dimension min and max (as the official code). With more components than clusters
    (over-clustering): the means of the `num_clusters` most frequent components ("FRQBASED").

    Args:
        features: [N, D].
        components: argmax π per sample [N].
        num_components: the mixture's K (default: num_clusters).
    """
    features = _as_features(features)
    components = np.asarray(components, dtype=np.int64)
    if components.shape != (features.shape[0],):
        raise ValueError(f"need one component id per sample: {components.shape} ids for "
                         f"{features.shape[0]} samples")
    num_components = int(num_components or num_clusters)
    if num_components < num_clusters:
        raise ValueError(f"{num_components} components cannot seed {num_clusters} clusters")
    counts = np.bincount(components, minlength=num_components)
    if counts.size > num_components:
        raise ValueError(f"component id {components.max()} is out of range for "
                         f"{num_components} components")
    if num_components == num_clusters:
        chosen = np.arange(num_clusters)
    else:
        chosen = np.argsort(-counts, kind="stable")[:num_clusters]
    rng = np.random.default_rng(seed)
    low, high = features.min(), features.max()
    centres = np.empty((num_clusters, features.shape[1]))
    for row, component in enumerate(chosen):
        if counts[component]:
            centres[row] = features[components == component].mean(axis=0)
        else:
            centres[row] = rng.uniform(low, high, size=features.shape[1])
    return centres
