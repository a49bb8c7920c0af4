"""Label-free scores on hand-made clusterings: a cluster that splits under augmentation
scores lower, a perfectly separated one scores top, and the pixel verdict."""

import numpy as np
import pytest

from mixem_tf import quality
from mixem_tf.quality import ClusterEvidence, cluster_scores, compare_to_pixels, run_scores

pytestmark = pytest.mark.core


def _blobs(sizes, spread, seed=0):
    """Points around the corners of a simplex (far apart), `spread` around each."""
    rng = np.random.default_rng(seed)
    centres = np.eye(len(sizes)) * 10.0
    clusters = np.repeat(np.arange(len(sizes)), sizes)
    features = centres[clusters] + rng.normal(0, spread, (clusters.size, len(sizes)))
    return clusters, features


def _onehot(clusters, k, p=0.9):
    probabilities = np.full((clusters.size, k), (1 - p) / (k - 1))
    probabilities[np.arange(clusters.size), clusters] = p
    return probabilities


def test_a_cluster_that_splits_under_augmentation_scores_lower_and_the_others_score_top():
    clusters, features = _blobs([40, 40, 40], spread=0.1)
    augmented = clusters.copy()
    augmented[:20] = 1  # half of cluster 0 moves to cluster 1 when augmented
    evidence = ClusterEvidence(clusters, augmented, _onehot(clusters, 3), features)
    rows = cluster_scores(evidence)
    assert [r["size"] for r in rows] == [40, 40, 40]
    assert rows[0]["stability"] == pytest.approx(0.5)
    assert rows[1]["stability"] == rows[2]["stability"] == 1.0
    for row in rows:  # tight blobs 10 apart: silhouettes near their maximum of 1
        assert row["separation"] > 0.98
        assert row["confidence"] == pytest.approx(0.9)
    run = run_scores(evidence)
    assert run["stability"] == pytest.approx(100 / 120)
    chance = 1 / 3 * (20 / 120) + 1 / 3 * (60 / 120) + 1 / 3 * (40 / 120)
    assert run["kappa"] == pytest.approx((100 / 120 - chance) / (1 - chance))
    assert run["largest_share"] == pytest.approx(1 / 3)
    assert run["empty_clusters"] == 0


def test_separation_falls_when_two_clusters_overlap_and_an_empty_cluster_has_no_scores():
    clusters, features = _blobs([50, 50, 50], spread=0.1, seed=1)
    features[clusters == 1] = features[clusters == 0][:50] + 0.05  # 1 sits on top of 0
    probabilities = _onehot(clusters, 4)
    rows = cluster_scores(ClusterEvidence(clusters, clusters, probabilities, features))
    assert rows[2]["separation"] > 0.98
    assert rows[0]["separation"] < 0.1 and rows[1]["separation"] < 0.1
    assert rows[3] == {"cluster": 3, "size": 0, "share": 0.0, "confidence": None,
                       "stability": None, "separation": None}
    assert run_scores(ClusterEvidence(clusters, clusters, probabilities, features))[
        "empty_clusters"] == 1


def test_confidence_is_the_probability_of_each_images_own_cluster():
    clusters = np.array([0, 0, 1, 1])
    probabilities = np.array([[0.8, 0.2], [0.6, 0.4], [0.3, 0.7], [0.1, 0.9]])
    evidence = ClusterEvidence(clusters, clusters, probabilities, np.eye(4))
    rows = cluster_scores(evidence)
    assert rows[0]["confidence"] == pytest.approx(0.7)
    assert rows[1]["confidence"] == pytest.approx(0.8)


def test_silhouettes_use_a_seeded_sample_of_large_runs(monkeypatch):
    monkeypatch.setattr(quality, "MAX_IMAGES", 60)
    clusters, features = _blobs([100, 100], spread=0.1)
    evidence = ClusterEvidence(clusters, clusters, _onehot(clusters, 2), features)
    assert run_scores(evidence, seed=3) == run_scores(evidence, seed=3)
    index = quality.sample_indices(200, 60, seed=3)
    assert index.size == 60 and np.all(np.diff(index) > 0)


def test_mismatched_evidence_is_refused_in_one_line():
    with pytest.raises(ValueError, match="augmented has 3 rows for 4 images"):
        ClusterEvidence(np.zeros(4, int), np.zeros(3, int), np.ones((4, 2)), np.ones((4, 1)))
    with pytest.raises(ValueError, match="do not cover cluster id 2"):
        ClusterEvidence(np.array([0, 2]), np.array([0, 2]), np.ones((2, 2)), np.ones((2, 1)))


def test_kappa_discounts_the_stability_that_uneven_sizes_give_by_chance():
    collapsed = np.array([0] * 96 + [1] * 4)
    moved = collapsed.copy()
    moved[[0, 1, 96, 97]] = [1, 1, 0, 0]  # 96% stay, yet no better than chance
    assert np.mean(moved == collapsed) == 0.96
    assert quality.kappa(collapsed, moved, 2) == pytest.approx(
        (0.96 - 0.9232) / (1 - 0.9232))
    assert quality.kappa(collapsed, collapsed, 2) == 1.0
    assert quality.kappa(np.zeros(5, int), np.zeros(5, int), 2) == 0.0


def test_a_model_no_more_stable_than_pixels_or_collapsed_gets_a_warning_naming_what_to_try():
    pixels = {"kappa": 0.60}
    assert compare_to_pixels({"kappa": 0.80, "largest_share": 0.2}, pixels) is None
    warning = compare_to_pixels({"kappa": 0.62, "largest_share": 0.2}, pixels)
    assert warning.startswith("warning: ") and "0.62 against 0.60" in warning
    assert "--epochs" in warning and "--init-from" in warning and "--method" in warning
    collapsed = compare_to_pixels({"kappa": 0.9, "largest_share": 0.96}, pixels)
    assert "collapsed: one cluster holds 96% of the images" in collapsed


def test_the_projector_files_hold_one_row_and_one_sprite_cell_per_image(tmp_path):
    pytest.importorskip("tensorboard")
    from google.protobuf import text_format
    from PIL import Image
    from tensorboard.plugins import projector

    from mixem_tf.projector import write_projector

    images = np.random.default_rng(0).integers(0, 255, (10, 8, 8, 1), dtype=np.uint8)
    embedding = np.arange(30, dtype=np.float32).reshape(10, 3)
    folder = write_projector(tmp_path / "projector", embedding, images,
                             {"cluster": [i % 2 for i in range(10)],
                              "label": [f"c{i}" for i in range(10)]}, name="z/l2/kmeans")
    config = text_format.Parse((folder / "projector_config.pbtxt").read_text(),
                               projector.ProjectorConfig())
    entry = config.embeddings[0]
    assert (entry.tensor_name, entry.tensor_path, entry.metadata_path) == (
        "z/l2/kmeans", "tensors.tsv", "metadata.tsv")
    np.testing.assert_allclose(np.loadtxt(folder / "tensors.tsv"), embedding)
    rows = (folder / "metadata.tsv").read_text().splitlines()
    assert rows[0] == "cluster\tlabel" and rows[3] == "0\tc2" and len(rows) == 11
    with Image.open(folder / entry.sprite.image_path) as sprite:  # 4 × 4 cells for 10 images
        assert sprite.size == (4 * entry.sprite.single_image_dim[0],) * 2
