"""Probabilities that mean what they say: a label-free temperature, and the ECE that checks it.

A read-out's soft assignment is `softmax(scores / T)`, with `scores` its logits at T = 1:
`-squared distance` to each centroid for K-means read-outs (export/module.py's centroid head)
and `log p` for a method's own probability vector p (the argmax heads; T = 1 gives p back).

**How T is chosen without labels** (`fit_temperature`): temperature scaling (Guo, Pleiss, Sun &
Weinberger 2017, arXiv:1706.04599) fits T by the negative log-likelihood of held-out labels;
we fit it by the likelihood of the cluster that an augmented copy of each image (the method's
own views) falls in. The probability of cluster k then answers "how likely is this image to
land in k under the nuisance the method was trained to ignore". The NLL is a proper scoring
rule: if each view's cluster were drawn from the true posterior, the fitted T would be the
true one (the synthetic test in tests/test_calibration.py checks exactly that). Views are
not labels: a cluster that is stable under augmentation but impure keeps confidence that
labels would not grant, and docs/BENCHMARKS.md ("Trusting clusters without labels")
measures by how much, as the expected calibration error against labels.

Why not the alternatives: the K-means inertia per image (the former T) is a scale, not a
fit, and was overconfident; the variance of an isotropic Gaussian mixture fitted to the
features (T = 2σ²) is far smaller still in 128 dimensions; matching only the mean confidence
to the views' agreement calibrates the average but not which images are the doubtful ones.

Example:
    >>> T = fit_temperature(-distances, augmented_clusters)
    >>> probabilities = softmax(-distances, T)
    >>> expected_calibration_error(probabilities.max(1), correct)
"""

from __future__ import annotations

import numpy as np

__all__ = ["ECE_BINS", "argmax_scores", "correct_under_matching", "expected_calibration_error",
           "fit_temperature", "softmax"]

ECE_BINS = 15
#: T is searched in this many decades either side of the scores' own scale.
SEARCH_DECADES = 4.0


def softmax(scores, temperature: float = 1.0) -> np.ndarray:
    """softmax(scores / T) over the last axis, float64 (stable for any finite scores)."""
    if not temperature > 0:
        raise ValueError(f"the temperature must be positive, got {temperature}")
    z = np.asarray(scores, np.float64) / temperature
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def argmax_scores(probabilities, eps: float = 1e-12) -> np.ndarray:
    """Logits of a probability vector: log p (clipped at `eps`), so softmax(·, 1) gives p."""
    return np.log(np.maximum(np.asarray(probabilities, np.float64), eps))


def _negative_log_likelihood(scores, targets, temperature: float) -> float:
    z = scores / temperature
    top = z.max(axis=-1)
    log_norm = top + np.log(np.exp(z - top[:, None]).sum(axis=-1))
    return float(np.mean(log_norm - z[np.arange(len(targets)), targets]))


def fit_temperature(scores, targets) -> float:
    """The T > 0 under which softmax(scores / T) gives `targets` (e.g. each image's cluster
    under an augmented view) the highest likelihood.

    The search runs over log T, `SEARCH_DECADES` decades either side of the scores' spread;
    when every target is its row's top score the likelihood rises as T falls, and the lower
    end of the range is returned (confidence near 1, as the evidence says).

    Raises:
        ValueError: shapes that do not fit, non-finite scores, or targets out of range.
    """
    from scipy.optimize import minimize_scalar

    scores = np.asarray(scores, np.float64)
    targets = np.asarray(targets, np.int64)
    if scores.ndim != 2 or targets.shape != (scores.shape[0],) or scores.shape[0] == 0:
        raise ValueError(f"need scores [N, K] and one target per row, got {scores.shape} "
                         f"and {targets.shape}")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores contain NaN or infinite values")
    if targets.min() < 0 or targets.max() >= scores.shape[1]:
        raise ValueError(f"targets must lie in 0..{scores.shape[1] - 1}")
    spread = float(np.std(scores - scores.mean(axis=-1, keepdims=True)))
    if spread == 0.0:
        return 1.0  # every score equal: the probabilities are uniform at any T
    centre = np.log10(spread)
    result = minimize_scalar(
        lambda log_t: _negative_log_likelihood(scores, targets, 10.0 ** log_t),
        bounds=(centre - SEARCH_DECADES, centre + SEARCH_DECADES), method="bounded",
        options={"xatol": 1e-4})
    return float(10.0 ** result.x)


def expected_calibration_error(confidence, correct, bins: int = ECE_BINS) -> float:
    """ECE (Naeini et al. 2015; Guo et al. 2017): the mean over equal-width confidence bins
    of |accuracy − mean confidence|, weighted by each bin's share of the samples."""
    confidence = np.asarray(confidence, np.float64)
    correct = np.asarray(correct, np.float64)
    if confidence.shape != correct.shape or confidence.ndim != 1 or confidence.size == 0:
        raise ValueError(f"need one correctness per confidence, got {confidence.shape} and "
                         f"{correct.shape}")
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    which = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)  # (i/b, (i+1)/b]
    total = 0.0
    for b in np.unique(which):
        members = which == b
        total += members.sum() * abs(correct[members].mean() - confidence[members].mean())
    return float(total / confidence.size)


def correct_under_matching(clusters, labels) -> np.ndarray:
    """Whether each image's cluster is its label's cluster under the Hungarian matching that
    ACC uses (`metrics.cluster_accuracy`); unmatched clusters count as wrong. For checking
    only: labels never choose T."""
    from scipy.optimize import linear_sum_assignment

    from mixem_tf.metrics import contingency_matrix

    counts, cluster_ids, class_ids = contingency_matrix(labels, clusters)
    rows, cols = linear_sum_assignment(-counts)
    matched = dict(zip(cluster_ids[rows].tolist(), class_ids[cols].tolist()))
    labels = np.asarray(labels, np.int64)
    return np.array([matched.get(int(c), None) == int(y)
                     for c, y in zip(np.asarray(clusters), labels)])
