"""K-means read-outs: structure recovery, settings, normalisation, given initialisation."""

import numpy as np
import pytest

from mixem_tf import cluster
from mixem_tf.metrics import cluster_accuracy

pytestmark = pytest.mark.core


def _blobs(seed=0, n_per=50, centres=((0, 0), (10, 0), (0, 10))):
    rng = np.random.default_rng(seed)
    points = [rng.normal(c, 0.5, size=(n_per, 2)) for c in centres]
    labels = np.repeat(np.arange(len(centres)), n_per)
    return np.concatenate(points), labels


def test_kmeans_recovers_well_separated_blobs():
    x, y = _blobs()
    result = cluster.kmeans(x, 3, seed=1)
    assert cluster_accuracy(y, result.labels) == 1.0
    assert result.centroids.shape == (3, 2)
    assert result.labels.dtype == np.int64


def test_official_settings_cap_iterations():
    assert cluster.OFFICIAL == cluster.KMeansSettings(n_init=50, max_iter=10)
    x, _ = _blobs()
    result = cluster.kmeans(x, 3, settings=cluster.KMeansSettings(n_init=1, max_iter=1))
    assert result.n_iter == 1


def test_given_init_is_used_and_runs_once():
    x, y = _blobs()
    init = np.array([[0.0, 10.0], [10.0, 0.0], [0.0, 0.0]])
    result = cluster.kmeans(x, 3, init=init, settings=cluster.OFFICIAL)
    # The given order fixes the cluster ids: blob 2 -> 0, blob 1 -> 1, blob 0 -> 2.
    assert np.array_equal(result.labels, 2 - y)


def test_normalisation_clusters_by_direction_not_length():
    # Two directions, each at very different lengths: raw K-means splits by length,
    # normalised K-means by direction.
    rng = np.random.default_rng(0)
    angles = np.concatenate([rng.normal(0.0, 0.05, 100), rng.normal(np.pi / 2, 0.05, 100)])
    lengths = np.tile(np.r_[np.full(50, 1.0), np.full(50, 100.0)], 2)
    x = np.stack([np.cos(angles), np.sin(angles)], axis=1) * lengths[:, None]
    direction = np.repeat([0, 1], 100)
    normalised = cluster.kmeans(x, 2, normalize=True)
    raw = cluster.kmeans(x, 2, normalize=False)
    assert cluster_accuracy(direction, normalised.labels) == 1.0
    assert cluster_accuracy(direction, raw.labels) < 0.8
    assert np.allclose(np.linalg.norm(normalised.centroids, axis=1), 1.0, atol=0.01)


def test_images_are_flattened():
    images = np.zeros((6, 4, 4, 1), dtype=np.uint8)
    images[3:] = 255
    result = cluster.kmeans(images, 2)
    assert cluster_accuracy([0, 0, 0, 1, 1, 1], result.labels) == 1.0
    assert result.centroids.shape == (2, 16)


def test_l2_normalize_keeps_zero_rows_finite():
    out = cluster.l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]]))
    assert np.allclose(out, [[0.6, 0.8], [0.0, 0.0]])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_clusters": 1}, "at least 2"),
        ({"num_clusters": 1000}, "cannot form 1000 clusters"),
        ({"num_clusters": 3, "init": "bogus"}, "init must be"),
        ({"num_clusters": 3, "init": np.zeros((2, 2))}, "shape"),
    ],
)
def test_bad_arguments_are_rejected_clearly(kwargs, message):
    x, _ = _blobs()
    with pytest.raises(ValueError, match=message):
        cluster.kmeans(x, **kwargs)


def test_non_finite_features_are_rejected():
    x, _ = _blobs()
    x[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        cluster.kmeans(x, 3)


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError, match="n_init"):
        cluster.KMeansSettings(n_init=0, max_iter=10)


def test_assign_matches_fitted_labels_and_scores_new_points():
    x, y = _blobs()
    result = cluster.kmeans(x, 3, seed=0)
    assert np.array_equal(cluster.assign(x, result.centroids), result.labels)
    new_points = np.array([[0.1, -0.2], [9.8, 0.3], [0.2, 10.1]])
    ids = cluster.assign(new_points, result.centroids)
    assert len(set(ids.tolist())) == 3
    with pytest.raises(ValueError, match="do not fit"):
        cluster.assign(x, np.zeros((3, 5)))
