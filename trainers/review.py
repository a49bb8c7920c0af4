"""Write a static HTML review of a trained run's clusters, to judge them without labels.

    python -m trainers.review --run runs/fmnist --out review/
    python -m trainers.review --run runs/photos --out review/ --readout h/l2/kmeans

The page (DIR/index.html, thumbnails under DIR/thumbs/) needs no network: open it from the
file. It shows the read-out table with label-free scores (and ACC/NMI/ARI only where the data
has labels), a t-SNE map coloured by cluster, a confidence histogram, and per cluster a random
sample, its most and least confident images. The scores read a seeded sample of at most
--images evaluation images; `folder:` runs show thumbnails made from the original files.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from mixem_tf.cli import ArgumentParser, run


def _thumbnail_source(evaluation, index: np.ndarray):
    """reviewed image i → an RGB Pillow thumbnail: from its file for `folder:` data (the
    original, not the training resolution), else from the array."""
    from PIL import Image

    from mixem_tf.gallery import thumbnail
    from mixem_tf.review import THUMB_PIXELS

    paths = getattr(evaluation, "paths", None)

    def make(i: int):
        if paths is not None:
            try:
                with Image.open(paths[index[i]]) as picture:
                    picture = picture.convert("RGB")
                    picture.thumbnail((THUMB_PIXELS * 2, THUMB_PIXELS * 2))
                    return picture
            except OSError:
                pass  # changed or removed since training: the training copy stands in
        return thumbnail(evaluation.images[index[i]], THUMB_PIXELS * 2)

    return make


def _table(readouts, pixels: dict) -> list:
    """The page's read-out rows (label-free scores, and ACC/NMI/ARI where labels exist), then
    the pixel baseline's."""
    from mixem_tf.quality import SCORE_NAMES

    rows = [{"name": r.name, "default": r.row.get("default", False),
             **{k: r.row["label_free"][k] for k in SCORE_NAMES},
             **{k: r.row[k] for k in ("acc", "nmi", "ari") if k in r.row}} for r in readouts]
    rows.append({"name": "pixels/raw/kmeans (baseline)",
                 **{k: pixels["label_free"][k] for k in SCORE_NAMES}})
    return rows


def build_review(run_dir, *, readout=None, max_images: int = 5000, seed: int = 0):
    """The `ReviewData` of a run: its read-out on a sample of its evaluation data, from the
    run's kept features (computed once if missing). A run evaluated before label-free scores
    existed is scored here (not written back)."""
    from mixem_tf.assessment import assess_pixels, readout_evidence, score_readouts
    from mixem_tf.features import evaluation_features
    from mixem_tf.methods import method_class
    from mixem_tf.quality import MAX_IMAGES, ClusterEvidence, cluster_scores, sample_indices
    from mixem_tf.readouts import load_metrics, load_readout, load_readouts
    from mixem_tf.review import MAX_MAP_POINTS, ReviewData, map_coordinates, typical_members
    from mixem_tf.runs import load_evaluation, load_run_config
    from mixem_tf.settings import TrainConfig
    from mixem_tf.training import PIXELS_ENTRY

    run_dir = Path(run_dir)
    saved = load_run_config(run_dir)
    config = TrainConfig.from_saved(saved["settings"])
    metrics = load_metrics(run_dir)
    chosen = load_readout(run_dir, readout)
    readouts = load_readouts(run_dir)
    evaluation = load_evaluation(config)
    clean = evaluation_features(run_dir, "clean", evaluation=evaluation, seed=config.seed)
    augmented = evaluation_features(run_dir, "augmented", evaluation=evaluation,
                                    seed=config.seed)
    embedding_feature = metrics.get("embedding_feature") or method_class(
        config.method).embedding_feature
    pixels = metrics.get(PIXELS_ENTRY)
    if pixels is None or any("label_free" not in r.row for r in readouts):
        augment_config = method_class(config.method).augmentation(
            config.dataset, image_size=config.image_size)
        pixels = assess_pixels(evaluation.images, augment_config, saved["num_clusters"],
                               seed=config.seed)
        score_readouts(readouts, clean, augmented, embedding_feature, pixels=pixels,
                       seed=config.seed)
        chosen = next(r for r in readouts if r.name == chosen.name)
    everything, temperature = readout_evidence(chosen, clean, augmented, embedding_feature)
    index = sample_indices(len(evaluation), max_images, seed)
    evidence = ClusterEvidence(everything.clusters[index], everything.augmented[index],
                               everything.probabilities[index], everything.features[index])
    map_index = sample_indices(index.size, MAX_MAP_POINTS, seed)
    print(f"t-SNE of {map_index.size} images", file=sys.stderr)
    coordinates = map_coordinates(evidence.features[map_index], seed)
    notes = [f"Reviewed {index.size} of {len(evaluation)} evaluation images "
             f"({'a seeded sample, ' if index.size < len(evaluation) else ''}{config.dataset},"
             f" {config.evaluate_on}); the cluster sections are measured on them "
             f"(silhouettes on at most {MAX_IMAGES}), the read-out table on all.",
             f"Probabilities use the read-out's label-free temperature "
             f"T = {temperature:.4g}, set without labels so that "
             "the mean confidence is the accuracy implied by how often an image and an "
             "augmented copy of it land in the same cluster."]
    settings = {"run": str(run_dir), "method": config.method, "dataset": config.dataset,
                "clusters (K)": chosen.num_clusters, "epochs": config.epochs,
                "backbone": config.backbone, "image size": "×".join(
                    str(v) for v in saved["input_shape"]), "batch size": config.batch_size,
                "learning rate": config.lr, "seed": config.seed, "backend": saved["backend"],
                "created": saved.get("created", "")}
    return ReviewData(
        title=f"{run_dir.name}: {config.method} on {config.dataset}", settings=settings,
        table=_table(readouts, pixels), readout=chosen.name, clusters=evidence.clusters,
        confidence=evidence.confidence, stays=evidence.augmented == evidence.clusters,
        cluster_rows=cluster_scores(evidence, seed),
        thumbnail=_thumbnail_source(evaluation, index), coordinates=coordinates,
        map_index=map_index, typical=typical_members(evidence.features, evidence.clusters),
        labels=evaluation.labels[index] if evaluation.labels is not None else None,
        class_names=evaluation.class_names, notes=notes,
        warning=chosen.row["label_free"].get("warning"))


def main(argv=None) -> int:
    parser = ArgumentParser(prog="python -m trainers.review", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="the run directory")
    parser.add_argument("--out", type=Path, required=True,
                        help="folder for index.html and thumbs/ (new, empty, or a review)")
    parser.add_argument("--readout", default=None,
                        help="FEATURE/l2|raw/KIND[@K], any of the run's read-outs, also those "
                             "trainers.recluster added (default: the run's default)")
    parser.add_argument("--images", type=int, default=5000,
                        help="review a seeded sample of at most this many evaluation images")
    parser.add_argument("--thumbnails", type=int, default=8,
                        help="thumbnails per row (random, most and least confident)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    from mixem_tf.review import is_review_dir, render_review

    if args.images < 2 or args.thumbnails < 1:
        raise ValueError("--images must be >= 2 and --thumbnails >= 1")
    if args.out.exists() and (not args.out.is_dir() or not is_review_dir(args.out)):
        raise ValueError(f"--out {args.out} holds other files; choose an empty or new folder")
    data = build_review(args.run, readout=args.readout, max_images=args.images, seed=args.seed)
    page = render_review(data, args.out, thumbnails=args.thumbnails, seed=args.seed)
    print(f"review: {page} ({len(data.cluster_rows)} clusters); open it in a browser",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
