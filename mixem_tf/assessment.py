"""A run's read-outs judged without labels, beside K-means on raw pixels.

`score_readouts` takes the evaluation features of the clean images and of one augmented view
of each (the method's own pipeline, `mixem_tf.features`), and for every read-out
(`mixem_tf.readouts.Readout`) sets its label-free temperature (`agreement_temperature`), which
becomes the read-out's `temperature` (served by the export), and measures its scores
(`mixem_tf.quality`) into its row. `assess_pixels` gives the pixel baseline the same
treatment: K-means on the clean images' pixels (after the method's resize and normalisation),
scored under augmented views of the same pipeline, so that stability means the same thing
for both.

Example:
    >>> pixels = assess_pixels(images, model.augment_config, num_clusters=10)
    >>> score_readouts(readouts, clean, augmented, model.embedding_feature, pixels=pixels)
    >>> readouts[0].row["label_free"]["stability"]
"""

from __future__ import annotations

import numpy as np

from mixem_tf.calibration import (argmax_scores, implied_accuracy, size_bound, softmax,
                                  temperature_for_confidence)
from mixem_tf.cluster import SKLEARN, l2_normalize
from mixem_tf.data.cache import read_rows
from mixem_tf.quality import (MAX_IMAGES, ClusterEvidence, cluster_scores, compare_to_pixels,
                              kappa, run_scores, sample_indices)

__all__ = ["agreement_temperature", "assess_pixels", "pixel_views", "readout_evidence",
           "readout_logits", "score_readouts"]


def readout_logits(readout, features: dict) -> np.ndarray:
    """The read-out's logits at T = 1 [N, K]: −squared distance to each centroid (centroid
    kinds), or log p of the method's probability vector (argmax kinds)."""
    if readout.head == "argmax":
        return argmax_scores(readout.space(features))
    return -np.asarray(readout.distances(features), np.float64)


def agreement_temperature(logits: np.ndarray, clusters: np.ndarray, views: np.ndarray
                          ) -> float:
    """The label-free T (docs: `mixem_tf.calibration`): the mean confidence is set to the
    accuracy that the clean and augmented clusters' agreement implies, the agreement taken
    beyond chance (κ, as if the clusters were of equal size: 1/K + κ(1 − 1/K)) so that a
    collapsed clustering, which agrees with itself trivially, gets no confidence from it; and
    capped by `calibration.size_bound`, the accuracy its cluster sizes allow at most."""
    k = logits.shape[1]
    balanced = 1.0 / k + max(kappa(clusters, views, k), 0.0) * (1.0 - 1.0 / k)
    return temperature_for_confidence(logits, min(implied_accuracy(balanced, k),
                                                  size_bound(clusters, k)))


def readout_evidence(readout, clean: dict, augmented: dict, embedding_feature: str
                     ) -> tuple[ClusterEvidence, float]:
    """(evidence, label-free temperature) of one read-out. The separation is measured on the
    read-out's own space, or for an argmax read-out on the L2-normalised `embedding_feature`
    (a probability vector is no geometry)."""
    logits = readout_logits(readout, clean)
    clusters, views = readout.assign(clean), readout.assign(augmented)
    temperature = agreement_temperature(logits, clusters, views)
    space = (l2_normalize(clean[embedding_feature]) if readout.head == "argmax"
             else readout.space(clean))
    return ClusterEvidence(clusters, views, softmax(logits, temperature), space), temperature


def _view_batches(images: np.ndarray, augment_config, seed: int, batch_size: int):
    from keras import ops

    from mixem_tf.augment import Augmenter, preprocess

    augmenter = Augmenter(augment_config, seed=seed)
    for start in range(0, len(images), batch_size):
        batch = np.asarray(read_rows(images, slice(start, start + batch_size)))
        yield tuple(ops.convert_to_numpy(x).reshape(len(batch), -1).astype(np.float32)
                    for x in (preprocess(batch, augment_config), augmenter(batch)))


def pixel_views(images: np.ndarray, augment_config, *, seed: int = 0,
                batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(clean, augmented) pixels of uint8 `images`, flattened float32 [N, h·w·c]: after the
    method's resize and normalisation, and of one augmented view each (seeded)."""
    clean, augmented = zip(*_view_batches(images, augment_config, seed, batch_size))
    return np.concatenate(clean), np.concatenate(augmented)


def assess_pixels(images: np.ndarray, augment_config, num_clusters: int, *, seed: int = 0
                  ) -> dict:
    """The pixel baseline on a seeded sample of at most `quality.MAX_IMAGES` of `images`:
    K-means (scikit-learn's budget) on their pixels, scored like a read-out.

    Returns:
        {"images": n, "label_free": run scores + temperature, "cluster_scores": [...]}.
    """
    from mixem_tf.readouts import ReadoutSpec, fit_readout

    chosen = read_rows(images, sample_indices(len(images), MAX_IMAGES, seed))
    clean, augmented = pixel_views(chosen, augment_config, seed=seed)
    readout = fit_readout(ReadoutSpec("pixels", False, "kmeans"), {"pixels": clean},
                          num_clusters, run_clusters=num_clusters, settings=SKLEARN, seed=seed)
    evidence, temperature = readout_evidence(readout, {"pixels": clean},
                                             {"pixels": augmented}, "pixels")
    return {"images": len(chosen),
            "label_free": {**run_scores(evidence, seed), "temperature": temperature},
            "cluster_scores": cluster_scores(evidence, seed)}


def score_readouts(readouts, clean: dict, augmented: dict, embedding_feature: str, *,
                   pixels: dict | None = None, seed: int = 0) -> None:
    """Adds to each read-out's row "label_free" (run scores, the label-free temperature, and
    the warning against `pixels`, an `assess_pixels` result, when given) and
    "cluster_scores"; a centroid read-out's `temperature` becomes the label-free one."""
    for readout in readouts:
        evidence, temperature = readout_evidence(readout, clean, augmented, embedding_feature)
        scores = run_scores(evidence, seed)
        warning = compare_to_pixels(scores, pixels["label_free"]) if pixels else None
        readout.row["label_free"] = {**scores, "temperature": temperature,
                                     "warning": warning}
        readout.row["cluster_scores"] = cluster_scores(evidence, seed)
        if readout.head != "argmax":
            readout.row["temperature"] = temperature
