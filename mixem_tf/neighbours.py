"""Nearest neighbours of every training image, mined once and kept in the run directory.

SCAN (Van Gansbeke et al., arXiv 2005.12320 §2.2; docs/METHODS.md, "SCAN and
self-labelling") mines each image's k = 20 nearest neighbours in a pretext feature before its
clustering step. The official code searches by inner product on L2-normalised features (faiss
`IndexFlatIP`); here the search is exact and in numpy (squared Euclidean distance in the
read-out's space: on L2-normalised features the same order as the inner product), blockwise so
memory stays at `block × N` distances.

The indices are stored in the run as `NEIGHBOURS_FILE`, written atomically, so a resumed run
trains on the same neighbours without mining again.

Example:
    >>> indices = mine_neighbours(features, k=20, normalize=True)    # int64 [N, 20]
    >>> save_neighbours(run_dir, indices, feature="z/l2")
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mixem_tf.atomic import write_npz_atomic

__all__ = ["NEIGHBOURS_FILE", "load_neighbours", "mine_neighbours", "save_neighbours"]

NEIGHBOURS_FILE = "neighbours.npz"


def mine_neighbours(features, k: int = 20, *, normalize: bool = True,
                    block: int = 1024) -> np.ndarray:
    """The `k` nearest other samples of every sample, nearest first: int64 [N, k].

    Args:
        features: [N, D].
        k: neighbours per sample, 1 <= k < N.
        normalize: L2-normalise the features first (the distance is then a cosine one).
        block: rows whose distances are computed at once.

    Raises:
        ValueError: k out of range, or non-finite features.
    """
    from mixem_tf.cluster import l2_normalize

    features = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
    n = len(features)
    if not 1 <= int(k) < n:
        raise ValueError(f"the number of neighbours must be between 1 and {n - 1} "
                         f"(one fewer than the images), got {k}")
    if not np.all(np.isfinite(features)):
        raise ValueError("the features to mine neighbours in contain NaN or infinite values")
    if normalize:
        features = l2_normalize(features)
    k = int(k)
    squares = np.sum(features ** 2, axis=1)
    result = np.empty((n, k), np.int64)
    for start in range(0, n, block):
        rows = slice(start, min(start + block, n))
        distances = squares[rows, None] - 2.0 * features[rows] @ features.T + squares[None, :]
        distances[np.arange(distances.shape[0]), np.arange(rows.start, rows.stop)] = np.inf
        nearest = np.argpartition(distances, k - 1, axis=1)[:, :k]
        order = np.argsort(np.take_along_axis(distances, nearest, axis=1), axis=1,
                           kind="stable")
        result[rows] = np.take_along_axis(nearest, order, axis=1)
    return result


def save_neighbours(run_dir, indices, *, feature: str) -> Path:
    """Writes `indices` (and the feature they were mined in) to `run_dir`/NEIGHBOURS_FILE."""
    path = Path(run_dir) / NEIGHBOURS_FILE
    write_npz_atomic(path, {"indices": np.asarray(indices, np.int64),
                            "feature": np.array(feature)})
    return path


def load_neighbours(run_dir, num_images: int, k: int) -> np.ndarray | None:
    """The stored neighbours of a run, or None if it has none.

    Raises:
        ValueError: the file holds neighbours of another number of images or another k.
    """
    path = Path(run_dir) / NEIGHBOURS_FILE
    if not path.is_file():
        return None
    with np.load(path) as archive:
        indices = archive["indices"]
    if indices.shape != (num_images, k):
        raise ValueError(f"{path} holds {indices.shape[1]} neighbours of {indices.shape[0]} "
                         f"images, the run needs {k} of {num_images}; delete it to mine "
                         "them again")
    return indices
