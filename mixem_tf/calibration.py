"""Probabilities that mean what they say: a label-free temperature, and the ECE that checks it.

A read-out's soft assignment is `softmax(scores / T)`, with `scores` its logits at T = 1:
`-squared distance` to each centroid for K-means read-outs (export/module.py's centroid head)
and `log p` for a method's own probability vector p (the argmax heads; T = 1 gives p back).

**How T is chosen without labels** (`assessment.agreement_temperature`): from the method's
own views. Each image is clustered twice, clean and under one augmented view; if both readings
were right with the same probability a and wrong uniformly over the other K − 1 clusters,
they would agree at rate a² + (1 − a)² / (K − 1). `implied_accuracy` inverts that, and T is
set so that the mean confidence equals the implied a, capped by what the cluster sizes allow
if the classes were of equal size (`size_bound`, `temperature_for_confidence`); the
geometry (distances, or the method's p) still ranks the images. The agreement is taken beyond
chance (Cohen's κ), so a collapsed clustering earns no confidence from agreeing with itself.

Measured alternatives (docs/BENCHMARKS.md, "Trusting clusters without labels"):
temperature scaling (Guo, Pleiss, Sun & Weinberger 2017, arXiv:1706.04599) with the augmented
view's cluster as the target instead of a label (`fit_temperature`, the NLL, a proper scoring
rule: exact if each view's cluster were a draw from the true posterior) made probabilities
far too cautious, because strong augmentations move images across clusters more often than
the class changes; the K-means inertia per image (the former T) is a scale, not a fit.
ECE (`expected_calibration_error`) against labels checks the result; labels never choose T.

Example:
    >>> T = temperature_for_confidence(-distances, implied_accuracy(agreement, K))
    >>> probabilities = softmax(-distances, T)
    >>> expected_calibration_error(probabilities.max(1), correct)
"""

from __future__ import annotations

import numpy as np

__all__ = ["ECE_BINS", "argmax_scores", "correct_under_matching", "expected_calibration_error",
           "fit_temperature", "implied_accuracy", "size_bound", "softmax",
           "temperature_for_confidence"]

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


def implied_accuracy(agreement: float, num_clusters: int) -> float:
    """The accuracy `a` of a clustering that two noisy readings of the same image (clean and
    augmented) would agree with at rate `agreement`, if each reading were right with
    probability a and wrong uniformly over the other K − 1 clusters, independently:
    agreement = a² + (1 − a)² / (K − 1), solved for a ≥ 1/K (1/K below chance)."""
    k = int(num_clusters)
    if k < 2:
        raise ValueError(f"need at least 2 clusters, got {k}")
    root = 1.0 - k + k * (k - 1) * float(agreement)
    return float(min(1.0, (1.0 + np.sqrt(max(root, 0.0))) / k))


def size_bound(clusters, num_clusters: int) -> float:
    """The highest accuracy (one-to-one matching, as ACC) that clusters of these sizes can
    reach if the K classes are of equal size: Σ_k min(share_k, 1/K). A collapsed clustering
    cannot be right about more images than its small clusters and one class hold."""
    shares = np.bincount(np.asarray(clusters, np.int64), minlength=num_clusters) / len(clusters)
    return float(np.minimum(shares, 1.0 / num_clusters).sum())


def temperature_for_confidence(scores, target: float) -> float:
    """The T at which the mean of max softmax(scores / T) equals `target` (in (1/K, 1)),
    found by bisection on log T (the mean confidence falls as T rises)."""
    scores = np.asarray(scores, np.float64)
    k = scores.shape[1]
    target = float(np.clip(target, 1.0 / k + 1e-6, 1.0 - 1e-6))
    spread = float(np.std(scores - scores.mean(axis=-1, keepdims=True))) or 1.0
    low, high = np.log10(spread) - SEARCH_DECADES, np.log10(spread) + SEARCH_DECADES
    for _ in range(60):
        middle = (low + high) / 2
        if softmax(scores, 10.0 ** middle).max(axis=-1).mean() > target:
            low = middle
        else:
            high = middle
    return float(10.0 ** ((low + high) / 2))


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
