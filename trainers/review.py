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

from mixem_tf.cli import run


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


def _table(metrics: dict, assessment: dict | None) -> list:
    """The page's read-out rows: metrics.json's label-free scores (or, for a run evaluated
    before they existed, `assessment`'s) and its checks."""
    from mixem_tf.runs import readout_key

    rows = []
    for row in metrics["readouts"]:
        name = readout_key(row)
        scores = row.get("label_free") or assessment["readouts"][name]["scores"]
        rows.append({"name": name, "default": row.get("default", False), **scores,
                     **{k: row[k] for k in ("acc", "nmi", "ari") if k in row}})
    pixels = (metrics.get("pixels") or {}).get("label_free") or assessment["pixels"]["scores"]
    rows.append({"name": "pixels/raw/kmeans (baseline)", **pixels})
    return rows


def build_review(run_dir, *, readout=None, max_images: int = 5000, seed: int = 0):
    """The `ReviewData` of a run: its model and read-out on a sample of its evaluation data."""
    from mixem_tf.assessment import (assess_readouts, embed_views, readout_evidence,
                                     scored_images)
    from mixem_tf.quality import MAX_IMAGES, cluster_scores
    from mixem_tf.review import (MAX_MAP_POINTS, ReviewData, map_coordinates,
                                 typical_members)
    from mixem_tf.runs import load_evaluation, load_metrics, load_readout, load_run, \
        readout_key

    run_dir = Path(run_dir)
    metrics = load_metrics(run_dir)
    chosen = load_readout(run_dir, readout)
    model, config, saved = load_run(run_dir)
    evaluation = load_evaluation(config)
    index = scored_images(evaluation.images, seed, max_images)
    print(f"embedding {len(index)} of {len(evaluation)} evaluation images, clean and "
          "augmented", file=sys.stderr)
    views = embed_views(model, evaluation.images[index], seed=seed)
    evidence, temperature = readout_evidence(chosen, views, model.embedding_feature)
    assessment = None
    if any("label_free" not in row for row in metrics["readouts"]) or "pixels" not in metrics:
        rows = {readout_key(row): load_readout(run_dir, readout_key(row))
                for row in metrics["readouts"]}
        assessment = assess_readouts(views, rows, model.embedding_feature,
                                     num_clusters=evidence.num_clusters, seed=seed)
    shown = index.size > MAX_MAP_POINTS
    map_index = (np.sort(np.random.default_rng(seed).choice(index.size, MAX_MAP_POINTS,
                                                            replace=False))
                 if shown else np.arange(index.size))
    print(f"t-SNE of {map_index.size} images", file=sys.stderr)
    coordinates = map_coordinates(evidence.features[map_index], seed)
    labels = evaluation.labels[index] if evaluation.labels is not None else None
    warning = next((row.get("label_free", {}).get("warning") for row in metrics["readouts"]
                    if readout_key(row) == chosen.key), None)
    notes = [f"Reviewed {index.size} of {len(evaluation)} evaluation images "
             f"({'a seeded sample, ' if index.size < len(evaluation) else ''}{config.dataset},"
             f" {config.evaluate_on}); cluster scores on this page are measured on them "
             f"(silhouettes on at most {MAX_IMAGES}).",
             f"Probabilities use the read-out's label-free temperature T = {temperature:.4g}, "
             "fitted so that they predict the cluster of an augmented copy of each image."]
    settings = {"run": str(run_dir), "method": config.method, "dataset": config.dataset,
                "clusters (K)": saved["num_clusters"], "epochs": config.epochs,
                "backbone": config.backbone, "image size": "×".join(
                    str(v) for v in saved["input_shape"]), "batch size": config.batch_size,
                "learning rate": config.lr, "seed": config.seed, "backend": saved["backend"],
                "created": saved.get("created", "")}
    return ReviewData(
        title=f"{run_dir.name}: {config.method} on {config.dataset}", settings=settings,
        table=_table(metrics, assessment), readout=chosen.key, clusters=evidence.clusters,
        confidence=evidence.confidence, stays=evidence.augmented == evidence.clusters,
        cluster_rows=cluster_scores(evidence, seed),
        thumbnail=_thumbnail_source(evaluation, index), coordinates=coordinates,
        map_index=map_index, typical=typical_members(evidence.features, evidence.clusters),
        labels=labels, class_names=evaluation.class_names, notes=notes, warning=warning)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainers.review", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="the run directory")
    parser.add_argument("--out", type=Path, required=True,
                        help="folder for index.html and thumbs/ (new, empty, or a review)")
    parser.add_argument("--readout", default=None,
                        help="FEATURE/l2|raw/CLUSTERING (default: the run's default)")
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
