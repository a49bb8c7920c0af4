"""Losses against numpy references."""

import numpy as np
import pytest
from keras import ops

from mixem_tf.losses import NTXentLoss

pytestmark = pytest.mark.core


def _nt_xent_reference(z_a, z_b, temperature):
    """Straight from the formula: 2B anchors, cosine similarity, 2B - 2 negatives."""
    z = np.concatenate([z_a, z_b]).astype(np.float64)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    n = z.shape[0]
    batch = n // 2
    sim = z @ z.T / temperature
    losses = []
    for i in range(n):
        positive = (i + batch) % n
        denominator = sum(np.exp(sim[i, j]) for j in range(n) if j != i)
        losses.append(-np.log(np.exp(sim[i, positive]) / denominator))
    return np.array(losses)


@pytest.mark.parametrize("temperature", [0.5, 0.1, 1.0])
def test_nt_xent_matches_numpy_reference(temperature):
    rng = np.random.default_rng(0)
    z_a, z_b = rng.normal(size=(2, 6, 5)).astype(np.float32)
    loss = NTXentLoss(temperature)
    expected = _nt_xent_reference(z_a, z_b, temperature)
    per_anchor = ops.convert_to_numpy(loss.per_anchor(z_a, z_b))
    np.testing.assert_allclose(per_anchor, expected, rtol=1e-5, atol=1e-5)
    assert float(loss(z_a, z_b)) == pytest.approx(expected.mean(), rel=1e-5)


def test_nt_xent_is_scale_invariant_and_low_for_matching_views():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(8, 16)).astype(np.float32)
    loss = NTXentLoss(0.5)
    same = float(loss(z, 3.0 * z))
    shuffled = float(loss(z, rng.permutation(z)))
    assert same < shuffled
    assert float(loss(z, z)) == pytest.approx(same, rel=1e-6)


def test_nt_xent_batch_of_one_has_only_its_positive():
    # With B = 1 the only other candidate is the positive: loss = -log(1) = 0.
    z = np.array([[1.0, 2.0]], dtype=np.float32)
    assert float(NTXentLoss(0.5)(z, -z)) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("temperature", [0.0, -1.0])
def test_nt_xent_rejects_bad_temperature(temperature):
    with pytest.raises(ValueError, match="temperature"):
        NTXentLoss(temperature)
