"""Metrics against hand-worked cases."""

import math

import numpy as np
import pytest

from mixem_tf import metrics

pytestmark = pytest.mark.core


def test_accuracy_is_invariant_to_cluster_renaming():
    y_true = [0, 0, 0, 1, 1, 2, 2, 2]
    y_pred = [5, 5, 5, 9, 9, 7, 7, 7]
    assert metrics.cluster_accuracy(y_true, y_pred) == 1.0


def test_accuracy_hand_worked_confusion():
    # Contingency (clusters x classes):
    #   cluster 0: class0=3 class1=1      best one-to-one: c0->0 (3), c1->1 (2)
    #   cluster 1: class0=2 class1=2      = 5 of 8 correct
    y_true = [0, 0, 0, 1, 0, 0, 1, 1]
    y_pred = [0, 0, 0, 0, 1, 1, 1, 1]
    assert metrics.cluster_accuracy(y_true, y_pred) == pytest.approx(5 / 8)


def test_accuracy_hungarian_is_one_to_one_not_greedy():
    # Greedy (largest cell first) picks c0->A (4) and leaves c1->B (0): 4/10.
    # The optimal matching is c0->B (3), c1->A (3): 6/10.
    y_true = ["A"] * 4 + ["B"] * 3 + ["A"] * 3
    y_pred = [0] * 4 + [0] * 3 + [1] * 3
    codes = {"A": 0, "B": 1}
    y_true = [codes[y] for y in y_true]
    assert metrics.cluster_accuracy(y_true, y_pred) == pytest.approx(6 / 10)


def test_accuracy_with_more_clusters_than_classes():
    # 4 clusters, 2 classes: one-to-one matches only two clusters; majority maps all four.
    y_true = [0, 0, 0, 0, 1, 1, 1, 1]
    y_pred = [0, 0, 1, 1, 2, 2, 3, 3]
    assert metrics.cluster_accuracy(y_true, y_pred) == pytest.approx(4 / 8)
    assert metrics.cluster_accuracy(y_true, y_pred, mapping="majority") == 1.0


def test_accuracy_with_fewer_clusters_than_classes():
    y_true = [0, 0, 1, 1, 2, 2]
    y_pred = [0, 0, 0, 0, 1, 1]
    assert metrics.cluster_accuracy(y_true, y_pred) == pytest.approx(4 / 6)


def test_nmi_hand_worked():
    # y_true = [0,0,1,1], y_pred = [0,0,0,1]
    # H(T) = ln 2; H(P) = -(3/4 ln 3/4 + 1/4 ln 1/4)
    # I = sum p(t,p) ln p(t,p)/(p(t)p(p)):
    #   (0,0): 1/2 ln((1/2)/(1/2*3/4)) = 1/2 ln(4/3)
    #   (1,0): 1/4 ln((1/4)/(1/2*3/4)) = 1/4 ln(2/3)
    #   (1,1): 1/4 ln((1/4)/(1/2*1/4)) = 1/4 ln 2
    h_t = math.log(2)
    h_p = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    mi = 0.5 * math.log(4 / 3) + 0.25 * math.log(2 / 3) + 0.25 * math.log(2)
    expected = mi / ((h_t + h_p) / 2)
    assert metrics.normalized_mutual_info([0, 0, 1, 1], [0, 0, 0, 1]) == pytest.approx(expected)


def test_ari_hand_worked():
    # Contingency [[2,0],[1,1]] (rows = clusters of y_pred [0,0,0,1]; cols = classes).
    # sum_ij C(n_ij,2) = 1; a (cluster sizes 3,1): C(3,2)=3; b (class sizes 2,2): 1+1=2;
    # expected = 3*2/C(4,2)=1; max = (3+2)/2 = 2.5; ARI = (1-1)/(2.5-1) = 0.
    assert metrics.adjusted_rand_index([0, 0, 1, 1], [0, 0, 0, 1]) == pytest.approx(0.0)
    # Perfect agreement up to renaming.
    assert metrics.adjusted_rand_index([0, 0, 1, 1, 2], [2, 2, 0, 0, 1]) == pytest.approx(1.0)


def test_evaluate_clustering_keys_and_values():
    result = metrics.evaluate_clustering(np.array([1, 1, 2, 2]), np.array([0, 0, 1, 1]))
    assert result == {"acc": 1.0, "nmi": pytest.approx(1.0), "ari": pytest.approx(1.0)}


@pytest.mark.parametrize(
    "y_true, y_pred, message",
    [
        ([0, 1], [0], "differ in length"),
        ([], [], "empty"),
        ([[0, 1]], [[0, 1]], "1-D"),
        ([0.5, 1.0], [0, 1], "integers"),
    ],
)
def test_bad_labels_are_rejected_clearly(y_true, y_pred, message):
    with pytest.raises(ValueError, match=message):
        metrics.evaluate_clustering(y_true, y_pred)


def test_unknown_mapping_is_rejected():
    with pytest.raises(ValueError, match="mapping"):
        metrics.cluster_accuracy([0, 1], [0, 1], mapping="greedy")


def test_cluster_sizes_and_largest_fraction():
    sizes = metrics.cluster_sizes([0, 0, 2, 2, 2], num_clusters=4)
    assert sizes.tolist() == [2, 0, 3, 0]
    assert metrics.largest_cluster_fraction([0, 0, 2, 2, 2]) == pytest.approx(0.6)
    with pytest.raises(ValueError, match="out of range"):
        metrics.cluster_sizes([0, 5], num_clusters=3)


def test_cluster_to_class_majority_and_purity():
    table = metrics.cluster_to_class([3, 3, 4, 4, 4], [0, 0, 0, 1, 1])
    assert table[0] == {"majority_label": 3, "purity": pytest.approx(2 / 3), "size": 3}
    assert table[1] == {"majority_label": 4, "purity": 1.0, "size": 2}
