"""A trained model's read-outs judged without labels, beside K-means on raw pixels.

`assess_readouts` embeds a seeded sample of the evaluation images twice, clean and under one
augmented view of the method's own pipeline (a fixed seed), and for every read-out fits its
label-free temperature (`mixem_tf.calibration`) and measures its scores
(`mixem_tf.quality`). The pixel baseline gets the same treatment: K-means on the clean images'
pixels (after the method's resize and normalisation), scored under the same augmented views,
so that stability means the same thing for both.

A read-out here is anything with `feature`, `normalize` and `centroids` (None for a method's
own argmax assignment), as `runs.Readout` and `cluster.readout_table`'s rows are.

Example:
    >>> views = embed_views(model, images)
    >>> assessment = assess_readouts(views, rows, model.embedding_feature, num_clusters=10)
    >>> assessment["readouts"]["z/l2/kmeans"]["scores"]["stability"]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mixem_tf.calibration import argmax_scores, fit_temperature, softmax
from mixem_tf.cluster import SKLEARN, kmeans, l2_normalize
from mixem_tf.quality import (MAX_IMAGES, ClusterEvidence, cluster_scores, compare_to_pixels,
                              run_scores, sample_indices)

__all__ = ["Views", "assess_pixels", "assess_readouts", "embed_views", "pixel_views",
           "readout_evidence", "readout_logits", "scored_images"]


@dataclass
class Views:
    """Features of clean images and of one augmented copy of each, plus their pixels.

    Attributes:
        clean, augmented: evaluation feature name → [N, D] (the model's `feature_names`).
        clean_pixels, augmented_pixels: the preprocessed / augmented images, flattened,
            float32 [N, h·w·c].
    """

    clean: dict
    augmented: dict
    clean_pixels: np.ndarray
    augmented_pixels: np.ndarray


def scored_images(images: np.ndarray, seed: int = 0, limit: int = MAX_IMAGES) -> np.ndarray:
    """The indices of the images the scores read: all, or a seeded sample of `limit`."""
    return sample_indices(len(images), limit, seed)


def _view_batches(images: np.ndarray, augment_config, seed: int, batch_size: int):
    """(clean, augmented) float batches of uint8 `images`: `preprocess` and one view each from
    an `Augmenter` seeded with `seed`, so that the same images always get the same views."""
    from mixem_tf.augment import Augmenter, preprocess

    augmenter = Augmenter(augment_config, seed=seed)
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size]
        yield preprocess(batch, augment_config), augmenter(batch)


def _flat(pixels) -> np.ndarray:
    from keras import ops

    pixels = ops.convert_to_numpy(pixels)
    return pixels.reshape(len(pixels), -1).astype(np.float32)


def embed_views(model, images: np.ndarray, *, seed: int = 0, batch_size: int = 256) -> Views:
    """Clean and augmented features (and pixels) of uint8 `images` under `model`'s views."""
    from keras import ops

    parts = {"clean": [], "augmented": [], "clean_pixels": [], "augmented_pixels": []}
    for clean, views in _view_batches(images, model.augment_config, seed, batch_size):
        for name, prepared in (("clean", clean), ("augmented", views)):
            output = model.embed_prepared(prepared)
            parts[name].append({f: ops.convert_to_numpy(v) for f, v in output.items()})
            parts[f"{name}_pixels"].append(_flat(prepared))
    features = {name: {f: np.concatenate([p[f] for p in parts[name]]) for f in
                       model.feature_names} for name in ("clean", "augmented")}
    return Views(features["clean"], features["augmented"],
                 np.concatenate(parts["clean_pixels"]), np.concatenate(parts["augmented_pixels"]))


def pixel_views(images: np.ndarray, augment_config, *, seed: int = 0,
                batch_size: int = 256) -> Views:
    """The pixels of `images` and of one augmented copy each, with no model (the features
    are the pixels): what `assess_pixels` reads."""
    clean, augmented = zip(*((_flat(c), _flat(a)) for c, a in
                             _view_batches(images, augment_config, seed, batch_size)))
    clean, augmented = np.concatenate(clean), np.concatenate(augmented)
    return Views({"pixels": clean}, {"pixels": augmented}, clean, augmented)


def _space(readout, features: dict) -> np.ndarray:
    values = np.asarray(features[readout.feature], np.float64)
    return l2_normalize(values) if readout.normalize else values


def readout_logits(readout, features: dict) -> np.ndarray:
    """The read-out's logits at T = 1 [N, K]: −squared distance to each centroid (K-means
    kinds), or log p of the method's probability vector (argmax kinds)."""
    readout = _as_readout(readout)
    if readout.centroids is None:
        return argmax_scores(features[readout.feature])
    centroids = readout.centroids
    space = _space(readout, features)
    return -np.maximum((space**2).sum(1, keepdims=True) - 2 * space @ centroids.T
                       + (centroids**2).sum(1), 0.0)


class _Row:
    """A `readout_table` row (a dict) seen as a read-out."""

    def __init__(self, row: dict):
        self.feature, self.normalize = row["feature"], bool(row["normalize"])
        centroids = row.get("centroids")
        self.centroids = None if centroids is None else np.asarray(centroids, np.float64)


def _as_readout(readout):
    return _Row(readout) if isinstance(readout, dict) else readout


def readout_evidence(readout, views: Views, embedding_feature: str
                     ) -> tuple[ClusterEvidence, float]:
    """(evidence, fitted temperature) of one read-out on `views`. The separation is measured
    on the read-out's own space, or for an argmax read-out on the L2-normalised
    `embedding_feature` (its probability vector is no geometry)."""
    readout = _as_readout(readout)
    clean = readout_logits(readout, views.clean)
    augmented = readout_logits(readout, views.augmented).argmax(1)
    temperature = fit_temperature(clean, augmented)
    space = (_space(readout, views.clean) if readout.centroids is not None
             else l2_normalize(views.clean[embedding_feature]))
    return ClusterEvidence(clean.argmax(1), augmented, softmax(clean, temperature),
                           space), temperature


def _pixel_evidence(views: Views, num_clusters: int, seed: int
                    ) -> tuple[ClusterEvidence, float]:
    result = kmeans(views.clean_pixels, num_clusters, settings=SKLEARN, seed=seed)
    row = _Row({"feature": "pixels", "normalize": False, "centroids": result.centroids})
    pixels = Views({"pixels": views.clean_pixels}, {"pixels": views.augmented_pixels},
                   views.clean_pixels, views.augmented_pixels)
    return readout_evidence(row, pixels, "pixels")


def _entry(evidence: ClusterEvidence, temperature: float, seed: int) -> dict:
    return {"temperature": temperature, "scores": run_scores(evidence, seed),
            "clusters": cluster_scores(evidence, seed)}


def assess_pixels(views: Views, num_clusters: int, seed: int = 0) -> dict:
    """The pixel baseline: K-means (scikit-learn's budget) on the clean images' pixels, scored
    like a read-out: {"temperature", "scores", "clusters"}."""
    return _entry(*_pixel_evidence(views, num_clusters, seed), seed)


def assess_readouts(views: Views, readouts: dict, embedding_feature: str, *,
                    num_clusters: int, seed: int = 0) -> dict:
    """Label-free scores of every read-out and of the pixel baseline on `views`.

    Args:
        readouts: name (`FEATURE/l2|raw/CLUSTERING`) → read-out (an object or a row dict
            with "feature", "normalize", "centroids").

    Returns:
        {"images": N, "readouts": {name: {"temperature", "scores", "clusters"}},
         "pixels": the same for K-means on pixels}; each read-out's entry also holds
        "warning" when it is no more stable than the pixels (else None).
    """
    pixels = assess_pixels(views, num_clusters, seed)
    entries = {}
    for name, readout in readouts.items():
        entry = _entry(*readout_evidence(readout, views, embedding_feature), seed)
        entry["warning"] = compare_to_pixels(entry["scores"], pixels["scores"])
        entries[name] = entry
    return {"images": len(views.clean_pixels), "readouts": entries, "pixels": pixels}
