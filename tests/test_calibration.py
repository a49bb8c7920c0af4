"""The label-free temperature against synthetic data whose true posterior is known, and ECE
against hand-worked cases."""

import numpy as np
import pytest

from mixem_tf.calibration import (argmax_scores, correct_under_matching,
                                  expected_calibration_error, fit_temperature, softmax)

pytestmark = pytest.mark.core


def _mixture(n=6000, sigma=1.0, seed=0):
    """Three isotropic Gaussians in 5-D with equal priors: the true posterior of an image is
    softmax(-‖x − μ‖² / 2σ²); `drawn` is one cluster drawn from it per image (what a view's
    cluster is, if views move images only within their posterior)."""
    rng = np.random.default_rng(seed)
    centres = np.zeros((3, 5))
    centres[[0, 1, 2], [0, 1, 2]] = 2.0
    latent = rng.integers(0, 3, n)
    x = centres[latent] + rng.normal(0, sigma, (n, 5))
    distances = ((x[:, None, :] - centres[None]) ** 2).sum(-1)
    posterior = softmax(-distances, 2 * sigma**2)
    drawn = np.array([rng.choice(3, p=p) for p in posterior])
    return distances, posterior, latent, drawn


def test_the_fitted_temperature_recovers_the_true_posteriors_from_draws_of_it():
    distances, posterior, _, drawn = _mixture(sigma=1.0)
    temperature = fit_temperature(-distances, drawn)
    assert temperature == pytest.approx(2.0, rel=0.1)
    fitted = softmax(-distances, temperature)
    assert np.abs(fitted - posterior).max() < 0.05


def test_calibration_cuts_the_ece_of_an_overconfident_temperature_against_true_classes():
    distances, _, latent, drawn = _mixture(sigma=1.0, seed=1)
    clusters = distances.argmin(1)
    correct = clusters == latent
    before = softmax(-distances, 0.2).max(1)  # ten times too confident
    after = softmax(-distances, fit_temperature(-distances, drawn)).max(1)
    assert expected_calibration_error(before, correct) > 0.1
    assert expected_calibration_error(after, correct) < 0.03


def test_targets_that_always_agree_drive_the_temperature_to_its_lower_end():
    distances, _, _, _ = _mixture(n=300)
    agreeing = fit_temperature(-distances, distances.argmin(1))
    assert softmax(-distances, agreeing).max(1).mean() > 0.99


def test_argmax_scores_give_the_probabilities_back_at_temperature_one():
    p = np.array([[0.7, 0.2, 0.1], [0.0, 0.5, 0.5]])
    np.testing.assert_allclose(softmax(argmax_scores(p), 1.0), p, atol=1e-11)
    sharper = softmax(argmax_scores(p), 0.5)  # p² renormalised
    np.testing.assert_allclose(sharper[0], np.array([49, 4, 1]) / 54)


def test_ece_on_hand_worked_bins():
    # bin (0.8, 0.8667]: 4 at 0.85, 3 right → |0.75 − 0.85| = 0.1, weight 4/10;
    # bin (0.2, 0.2667]: 6 at 0.25, 0 right → 0.25, weight 6/10.
    confidence = np.array([0.85] * 4 + [0.25] * 6)
    correct = np.array([1, 1, 1, 0] + [0] * 6)
    assert expected_calibration_error(confidence, correct) == pytest.approx(0.4 * 0.1 + 0.6 * 0.25)
    assert expected_calibration_error(np.array([0.9] * 10), np.array([1] * 9 + [0])) == \
        pytest.approx(0.0)
    with pytest.raises(ValueError, match="one correctness per confidence"):
        expected_calibration_error(np.ones(3), np.ones(2))


def test_correctness_follows_the_hungarian_matching_of_acc():
    labels = np.array([5, 5, 5, 7, 7, 9])
    clusters = np.array([1, 1, 0, 0, 0, 2])  # 1→5, 0→7, 2→9
    assert correct_under_matching(clusters, labels).tolist() == [True, True, False, True,
                                                                 True, True]


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="one target per row"):
        fit_temperature(np.zeros((3, 2)), np.zeros(2, int))
    with pytest.raises(ValueError, match="targets must lie in 0..1"):
        fit_temperature(np.zeros((2, 2)), np.array([0, 2]))
    with pytest.raises(ValueError, match="temperature must be positive"):
        softmax(np.zeros((1, 2)), 0.0)


def test_the_accuracy_implied_by_agreement_inverts_two_independent_noisy_readings():
    from mixem_tf.calibration import implied_accuracy

    for a, k in ((0.9, 10), (0.6, 3), (0.5, 2)):
        agreement = a**2 + (1 - a) ** 2 / (k - 1)
        assert implied_accuracy(agreement, k) == pytest.approx(a)
    assert implied_accuracy(0.05, 10) == pytest.approx(0.1)  # below chance: 1/K
    # simulated: two readings right with p = 0.7, else a uniform other cluster
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 5, 20000)

    def reading():
        wrong = rng.random(truth.size) > 0.7
        return np.where(wrong, (truth + rng.integers(1, 5, truth.size)) % 5, truth)

    assert implied_accuracy(np.mean(reading() == reading()), 5) == pytest.approx(0.7, abs=0.01)


def test_the_temperature_for_a_confidence_hits_it():
    from mixem_tf.calibration import temperature_for_confidence

    distances, _, _, _ = _mixture(n=500)
    for target in (0.5, 0.8, 0.95):
        t = temperature_for_confidence(-distances, target)
        assert softmax(-distances, t).max(1).mean() == pytest.approx(target, abs=1e-4)


def test_cluster_sizes_bound_the_accuracy_a_collapsed_clustering_can_have():
    from mixem_tf.calibration import size_bound

    assert size_bound(np.repeat(np.arange(4), 25), 4) == pytest.approx(1.0)
    collapsed = np.array([0] * 70 + [1] * 10 + [2] * 10 + [3] * 10)  # 70% in one cluster
    assert size_bound(collapsed, 4) == pytest.approx(0.25 + 0.3)
    labels = np.repeat(np.arange(4), 25)  # the best any labelling of equal classes allows
    assert correct_under_matching(collapsed, labels).mean() <= size_bound(collapsed, 4)


def test_the_served_temperature_follows_the_views_agreement_beyond_chance():
    from mixem_tf.assessment import agreement_temperature
    from mixem_tf.calibration import size_bound

    distances, _, _, _ = _mixture(n=900, seed=2)
    clusters = distances.argmin(1)
    agreeing = softmax(-distances, agreement_temperature(-distances, clusters, clusters))
    assert agreeing.max(1).mean() == pytest.approx(size_bound(clusters, 3), abs=1e-3)
    shuffled = np.random.default_rng(0).permutation(clusters)  # views unrelated: chance
    chance = softmax(-distances, agreement_temperature(-distances, clusters, shuffled))
    assert chance.max(1).mean() < 0.36
