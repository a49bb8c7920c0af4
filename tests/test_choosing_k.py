"""Choosing K without labels: each criterion on hand-made data with a known number of blobs,
the `--clusters` grammar, and the collapse rule."""

import numpy as np
import pytest

from mixem_tf import criteria
from mixem_tf.choosing_k import DEFAULT_RANGE, choose_k, parse_clusters
from mixem_tf.readouts import ReadoutSpec

pytestmark = pytest.mark.core


def _blobs(k, per=60, dim=12, spread=0.15, seed=0):
    """K well-separated groups on the unit sphere (the geometry of an L2 read-out)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, dim))
    labels = np.repeat(np.arange(k), per)
    return centres[labels] + spread * rng.normal(size=(k * per, dim)), labels


@pytest.mark.parametrize("true_k", [3, 6])
def test_every_criterion_finds_the_number_of_separated_blobs(true_k):
    h, labels = _blobs(true_k)
    augmented = h + 0.02 * np.random.default_rng(1).normal(size=h.shape)
    choice = choose_k(ReadoutSpec("h", True, "kmeans"), {"h": h}, range(2, 11),
                      augmented={"h": augmented}, labels=labels)
    assert choice.chosen["silhouette"] == true_k
    assert choice.chosen["prediction_strength"] == true_k
    assert choice.chosen["eigengap"] == true_k
    assert choice.k == true_k and choice.criterion == "eigengap"
    row = next(r for r in choice.table if r["K"] == true_k)
    assert row["acc"] == pytest.approx(1.0)  # labels only check
    assert [r["K"] for r in choice.table] == list(range(2, 11))


def test_stability_drops_when_the_views_move_images_between_clusters():
    h, _ = _blobs(4)
    rng = np.random.default_rng(2)
    steady = choose_k(ReadoutSpec("h", True, "kmeans"), {"h": h}, [4],
                      augmented={"h": h + 0.01 * rng.normal(size=h.shape)})
    shaken = choose_k(ReadoutSpec("h", True, "kmeans"), {"h": h}, [4],
                      augmented={"h": rng.permutation(h)})
    assert steady.table[0]["stability"] > 0.95 > 0.1 > shaken.table[0]["stability"]


def test_labels_never_change_a_choice():
    h, labels = _blobs(5, seed=3)
    spec = ReadoutSpec("h", True, "kmeans")
    with_labels = choose_k(spec, {"h": h}, range(2, 9), labels=labels)
    shuffled = choose_k(spec, {"h": h}, range(2, 9),
                        labels=np.random.default_rng(0).permutation(labels))
    without = choose_k(spec, {"h": h}, range(2, 9))
    assert with_labels.chosen == shuffled.chosen == without.chosen
    assert "acc" not in without.table[0] and "stability" not in without.table[0]


def test_prediction_strength_is_near_one_at_the_true_k_and_low_above_it():
    h, _ = _blobs(4, per=80)
    assert criteria.prediction_strength(h, 4) > 0.95
    assert criteria.prediction_strength(h, 8) < 0.8


def test_the_eigengap_is_largest_after_the_number_of_groups():
    h, _ = _blobs(5)
    spectrum = criteria.eigengap_spectrum(h, 10)
    gaps = np.diff(spectrum)
    assert int(np.argmax(gaps)) + 1 == 5
    assert spectrum[:5].max() < 1e-6


def test_clusters_grammar():
    assert parse_clusters("7") == 7
    assert parse_clusters("auto") == DEFAULT_RANGE
    assert parse_clusters("2..30") == (2, 30)
    for bad in ("1", "x", "5..5", "1..4", "3..", "auto2"):
        with pytest.raises(ValueError, match="--clusters"):
            parse_clusters(bad)


def test_a_range_the_images_cannot_hold_and_an_unknown_criterion_are_refused():
    h, _ = _blobs(2, per=5)
    spec = ReadoutSpec("h", True, "kmeans")
    with pytest.raises(ValueError, match="does not fit 10 images"):
        choose_k(spec, {"h": h}, range(2, 11))
    with pytest.raises(ValueError, match="--criterion 'gap'"):
        choose_k(spec, {"h": h}, range(2, 4), criterion="gap")
    with pytest.raises(ValueError, match="needs the augmented view"):
        choose_k(spec, {"h": h}, range(2, 4), criterion="stability")


def test_the_collapse_rule_refuses_one_cluster_over_half_unless_choosing_k():
    clusters = np.array([0] * 51 + [1] * 49)
    features = np.eye(2)[clusters] + 0.01
    with pytest.raises(criteria.CollapsedClusteringError, match="holds 51%"):
        criteria.silhouette(features, clusters)
    assert criteria.silhouette(features, clusters, refuse_collapsed=False) > 0.9
