"""Evaluation features of a run: the model's outputs on its evaluation images, computed once
per checkpoint and kept in the run directory, so that fitting a read-out at a new K, choosing
K or reviewing the clusters does not run the network again.

    runs/NAME/features/epoch-0005.clean.npz       float32 outputs of the clean images
    runs/NAME/features/epoch-0005.augmented.npz   of one augmented view of each (seeded)

A file holds every evaluation feature of the method (`feature_names`) as float32 [N, D], the
SHA-256 of the checkpoint it came from (and, augmented view, the seed of the views) and (clean
view) the evaluation labels, if any: on disk it costs N × (sum of the features' widths) × 4
bytes per view (digits with MIX'EM's h, z, e_max, π: 1,797 × 812 × 4 ≈ 5.8 MB).
Only the latest checkpoint's files are kept.

Example:
    >>> features = evaluation_features("runs/digits-mixem")      # {"h": [N, 512], "z": ...}
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from mixem_tf import checkpoints
from mixem_tf.atomic import write_npz_atomic

__all__ = ["FEATURES_DIR", "VIEWS", "embed", "evaluation_features", "evaluation_labels"]

FEATURES_DIR = "features"
VIEWS = ("clean", "augmented")
CHECKPOINT_KEY = "__checkpoint__"
LABELS_KEY = "__labels__"


def embed(model, images, *, batch_size: int = 256, augment_seed: int | None = None) -> dict:
    """The method's evaluation features of uint8 `images` as float32 arrays, batch by batch
    (the images may be a memory map; one batch is read at a time, `read_rows`).

    Args:
        augment_seed: None for the clean images; else one augmented view of each image,
            drawn by the method's own view pipeline from this seed.
    """
    from keras import ops

    from mixem_tf.data.cache import read_rows

    augmenter = None
    if augment_seed is not None:
        from mixem_tf.augment import Augmenter

        augmenter = Augmenter(model.augment_config, seed=augment_seed)
    out = None
    for start in range(0, len(images), batch_size):
        batch = np.asarray(read_rows(images, slice(start, start + batch_size)))
        if augmenter is None:
            outputs = model.embed(batch)
        else:
            outputs = model.embed_prepared(augmenter(batch))
        outputs = {name: ops.convert_to_numpy(outputs[name]) for name in model.feature_names}
        if out is None:
            out = {name: np.empty((len(images), *value.shape[1:]), np.float32)
                   for name, value in outputs.items()}
        for name, value in outputs.items():
            out[name][start:start + len(batch)] = value
    return out


def _path(run_dir: Path, checkpoint: Path, view: str) -> Path:
    return run_dir / FEATURES_DIR / f"{checkpoint.stem}.{view}.npz"


def _read(path: Path, identity: str) -> dict | None:
    """The features in `path`, or None when unreadable or of another checkpoint."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            if CHECKPOINT_KEY not in archive.files or str(archive[CHECKPOINT_KEY]) != identity:
                return None
            return {name: archive[name] for name in archive.files
                    if name not in (CHECKPOINT_KEY, LABELS_KEY)}
    except (OSError, ValueError, EOFError):
        return None


def evaluation_features(run_dir, view: str = "clean", *, model=None, evaluation=None,
                        seed: int = 0, verbose: bool = True) -> dict:
    """The run's evaluation features at its latest checkpoint, from the run's cache or
    computed (and then cached).

    Args:
        view: "clean" or "augmented" (one view per image from `seed`).
        model, evaluation: the run's model and evaluation data, when the caller has them
            (otherwise they are loaded from the run).

    Raises:
        ValueError: the run has no checkpoint, or `view` is unknown.
    """
    if view not in VIEWS:
        raise ValueError(f"view must be one of {VIEWS}, got {view!r}")
    run_dir = Path(run_dir)
    latest = checkpoints.latest_checkpoint(run_dir / "checkpoints")
    if latest is None:
        raise ValueError(f"{run_dir} has no checkpoint")
    checkpoint, record = latest
    # Checkpoints written before checksums were recorded are told apart by their mtime.
    identity = record.get("sha256") or f"mtime:{checkpoint.stat().st_mtime_ns}"
    if view == "augmented":  # views drawn from another seed are other features
        identity += f" views-seed:{seed}"
    path = _path(run_dir, checkpoint, view)
    cached = _read(path, identity) if path.is_file() else None
    if cached is not None:
        return cached
    if model is None or evaluation is None:
        from mixem_tf.runs import load_evaluation, load_run

        loaded, config, _ = load_run(run_dir)
        model = model or loaded
        evaluation = evaluation or load_evaluation(config)
    if verbose:
        print(f"computing the {view} features of {len(evaluation)} evaluation images "
              f"(kept in {run_dir / FEATURES_DIR})", file=sys.stderr)
    features = embed(model, evaluation.images,
                     augment_seed=seed if view == "augmented" else None)
    try:
        labels = ({LABELS_KEY: evaluation.labels}
                  if view == "clean" and evaluation.labels is not None else {})
        write_npz_atomic(path, {**features, **labels, CHECKPOINT_KEY: np.asarray(identity)})
        for old in path.parent.glob("*.npz"):
            if not old.name.startswith(f"{checkpoint.stem}."):
                old.unlink(missing_ok=True)
    except OSError as error:
        print(f"warning: could not keep the features in {path.parent} ({error.strerror}); "
              "they will be computed again next time", file=sys.stderr)
    return features


def evaluation_labels(run_dir):
    """The evaluation labels kept beside the latest clean features (int64 [N]), or None when
    the data has none or no features were kept yet."""
    run_dir = Path(run_dir)
    for path in sorted((run_dir / FEATURES_DIR).glob("*.clean.npz")):
        with np.load(path, allow_pickle=False) as archive:
            if LABELS_KEY in archive.files:
                return archive[LABELS_KEY]
    return None
