"""SCAN's losses and neighbour mining against numpy references, on the current backend (CI
runs this file under TensorFlow and under JAX)."""

import numpy as np
import pytest

from mixem_tf.losses import confidence_cross_entropy, scan_loss
from mixem_tf.neighbours import load_neighbours, mine_neighbours, save_neighbours

pytestmark = pytest.mark.core

RNG = np.random.default_rng(7)


def _softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _log_softmax(x):
    shifted = x - x.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def test_scan_loss_matches_the_official_formula():
    anchors, neighbours = RNG.normal(size=(2, 8, 5)).astype(np.float32)
    consistency, entropy = (float(v) for v in scan_loss(anchors, neighbours, 5.0))
    p, q = _softmax(anchors.astype(np.float64)), _softmax(neighbours.astype(np.float64))
    assert consistency == pytest.approx(-np.mean(np.log((p * q).sum(1))), rel=1e-5)
    marginal = p.mean(0)
    assert entropy == pytest.approx(-(marginal * np.log(marginal)).sum(), rel=1e-5)


def test_scan_entropy_is_largest_when_every_cluster_is_used():
    uniform = np.tile(np.eye(4, dtype=np.float32) * 20, (2, 1))       # 8 images, 4 clusters
    collapsed = np.tile(np.array([[20.0, 0, 0, 0]], np.float32), (8, 1))
    _, spread = scan_loss(uniform, uniform)
    consistency, single = scan_loss(collapsed, collapsed)
    assert float(spread) == pytest.approx(np.log(4), rel=1e-4)
    assert float(single) == pytest.approx(0.0, abs=1e-4)
    assert float(consistency) == pytest.approx(0.0, abs=1e-4)   # confident and agreeing


def test_scan_consistency_stays_finite_when_anchor_and_neighbour_disagree_completely():
    anchors = np.array([[200.0, -200.0]], np.float32)
    neighbours = np.array([[-200.0, 200.0]], np.float32)
    consistency, _ = scan_loss(anchors, neighbours)
    assert np.isfinite(float(consistency)) and float(consistency) > 80
    with pytest.raises(ValueError, match="entropy_weight"):
        scan_loss(anchors, neighbours, -1.0)


def _confidence_reference(weak, strong, threshold, balance):
    p = _softmax(weak.astype(np.float64))
    mask = p.max(1) > threshold
    labels = p.argmax(1)[mask]
    if not mask.any():
        return 0.0, 0.0
    weight = np.ones(weak.shape[1])
    if balance:
        classes, counts = np.unique(labels, return_counts=True)
        weight[classes] = 1.0 / (counts / mask.sum())           # the official weights
    losses = -_log_softmax(strong.astype(np.float64))[mask, labels]
    w = weight[labels]
    return (w * losses).sum() / w.sum(), mask.mean()            # PyTorch's weighted mean


@pytest.mark.parametrize("balance", [True, False])
def test_confidence_cross_entropy_matches_the_official_class_balanced_mean(balance):
    weak = np.array([[9, 0, 0], [8, 0, 0], [7, 0, 0], [0, 9, 0], [0, 0, 1], [1, 1, 1]],
                    np.float32)
    strong = RNG.normal(size=weak.shape).astype(np.float32)
    loss, confident = confidence_cross_entropy(weak, strong, 0.99, balance=balance)
    expected, fraction = _confidence_reference(weak, strong, 0.99, balance)
    assert float(confident) == pytest.approx(fraction) and fraction == pytest.approx(4 / 6)
    assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_class_balancing_weighs_each_confident_class_equally():
    """Three confident images of class 0 and one of class 1: balanced, the mean is the mean
    of the two classes' mean losses."""
    weak = np.array([[9, 0], [9, 0], [9, 0], [0, 9]], np.float32)
    strong = np.array([[0, 0], [1, 0], [2, 0], [0, 3]], np.float32)
    loss, _ = confidence_cross_entropy(weak, strong, 0.99)
    ce = -_log_softmax(strong.astype(np.float64))[np.arange(4), [0, 0, 0, 1]]
    assert float(loss) == pytest.approx((ce[:3].mean() + ce[3]) / 2, rel=1e-5)


def test_an_empty_confident_set_gives_zero_loss_and_no_gradient():
    import keras

    weak = np.zeros((4, 3), np.float32)                 # uniform: nobody is confident
    strong = RNG.normal(size=(4, 3)).astype(np.float32)
    loss, confident = confidence_cross_entropy(weak, strong, 0.99)
    assert float(loss) == 0.0 and float(confident) == 0.0
    if keras.backend.backend() == "jax":
        import jax

        grad = np.asarray(jax.grad(lambda s: confidence_cross_entropy(weak, s)[0])(strong))
    else:
        import tensorflow as tf

        s = tf.constant(strong)
        with tf.GradientTape() as tape:
            tape.watch(s)
            value = confidence_cross_entropy(weak, s)[0]
        grad = tape.gradient(value, s).numpy()
    np.testing.assert_array_equal(grad, np.zeros_like(strong))
    with pytest.raises(ValueError, match="threshold"):
        confidence_cross_entropy(weak, strong, 1.0)


@pytest.mark.parametrize("normalize", [True, False])
def test_mined_neighbours_are_the_brute_force_nearest(normalize):
    features = RNG.normal(size=(300, 6))
    got = mine_neighbours(features, 7, normalize=normalize, block=64)
    space = features / np.linalg.norm(features, axis=1, keepdims=True) if normalize else features
    distances = ((space[:, None] - space[None]) ** 2).sum(-1)
    np.fill_diagonal(distances, np.inf)
    np.testing.assert_array_equal(got, np.argsort(distances, axis=1)[:, :7])


def test_mining_refuses_impossible_requests():
    with pytest.raises(ValueError, match="between 1 and 4"):
        mine_neighbours(np.eye(5), 5)
    with pytest.raises(ValueError, match="NaN"):
        mine_neighbours(np.full((5, 2), np.nan), 2)


def test_neighbours_are_kept_in_the_run_and_checked_when_read_back(tmp_path):
    indices = mine_neighbours(RNG.normal(size=(50, 3)), 4)
    save_neighbours(tmp_path, indices, feature="h/l2/kmeans")
    np.testing.assert_array_equal(load_neighbours(tmp_path, 50, 4), indices)
    assert load_neighbours(tmp_path / "none", 50, 4) is None
    with pytest.raises(ValueError, match="holds 4 neighbours of 50 images"):
        load_neighbours(tmp_path, 60, 4)
