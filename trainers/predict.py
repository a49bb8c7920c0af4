"""Cluster new images with an exported model.

    python -m trainers.predict --model models/mixem/1 --images DIR --out clusters.csv
    python -m trainers.predict --onnx mixem.onnx --images DIR --out clusters.csv \\
        --gallery gallery.png

Every non-hidden file under DIR (recursively, sorted) gets one CSV row: path, cluster,
probability (the soft assignment of that cluster), error. Image files are those training
reads (`mixem_tf.data.folder.IMAGE_EXTENSIONS`: JPEG, PNG, BMP, GIF, WebP, TIFF); any other
file, anything that is not a regular file (a named pipe, a device: never opened), or a file
that is not a readable image, gets its reason in the error column and an empty
cluster, and the run goes on. When no file at all could be clustered the command fails (exit
2) and draws no gallery. Images are read with Pillow at their own size (grey stays grey,
anything else becomes RGB) and sent in batches (`--batch-size`, images of one size together);
the model does the rest. `--gallery` draws up to `--gallery-samples` images of each cluster
per row, labelled with the cluster's size, its images' mean confidence and, for a SavedModel,
the training data's majority label and its purity. `--gallery-order` picks them: `random` (the
default: a uniform sample, which shows what a cluster really holds), `confident` (its most
confident images, its best case) or `uncertain` (its least confident, where it blurs).
"""

from __future__ import annotations

import argparse
import csv
import heapq
import sys
import time
from pathlib import Path

import numpy as np

from mixem_tf.cli import ArgumentParser, run

FIELDS = ("path", "cluster", "probability", "error")
GALLERY_ORDERS = ("random", "confident", "uncertain")


class _GallerySample:
    """Up to `size` images per cluster, kept in one pass over any number of files: those with
    the largest key, where the key is the probability (`confident`), its negation
    (`uncertain`) or a uniform random number (`random`: a reservoir sample, seeded)."""

    def __init__(self, order: str, size: int, seed: int = 0):
        if order not in GALLERY_ORDERS:
            raise ValueError(f"--gallery-order must be one of {', '.join(GALLERY_ORDERS)}, "
                             f"got {order!r}")
        self.order, self.size, self.rng = order, size, np.random.default_rng(seed)
        self.heaps: dict[int, list] = {}
        self.confidence: dict[int, float] = {}  # cluster → sum of its images' probabilities

    def add(self, cluster: int, probability: float, position: int, image) -> None:
        self.confidence[cluster] = self.confidence.get(cluster, 0.0) + probability
        key = {"confident": probability, "uncertain": -probability,
               "random": self.rng.random()}[self.order]
        heap = self.heaps.setdefault(cluster, [])
        (heapq.heappush if len(heap) < self.size else heapq.heappushpop)(
            heap, (key, -position, image))

    def images(self) -> dict:
        """cluster → images: by falling confidence, rising confidence, or file order."""
        def order(entry):
            key, negative_position, _ = entry
            return -negative_position if self.order == "random" else (-key, -negative_position)

        return {k: [image for _, _, image in sorted(heap, key=order)]
                for k, heap in self.heaps.items()}


class _Progress:
    """Progress on stderr: a bar redrawn in place on a terminal, else one line per chunk."""

    def __init__(self, total: int, width: int = 30, terminal: bool | None = None):
        self.total, self.width, self.start = total, width, time.monotonic()
        self.terminal = sys.stderr.isatty() if terminal is None else terminal

    def update(self, done: int, errors: int) -> None:
        rate = done / max(time.monotonic() - self.start, 1e-9)
        text = f"{done}/{self.total} files {rate:.0f}/s, {errors} unreadable"
        if not self.terminal:
            print(text, file=sys.stderr, flush=True)
            return
        filled = self.width * done // max(self.total, 1)
        print(f"\r[{'#' * filled}{'.' * (self.width - filled)}] {text}", end="",
              file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.terminal:
            print(file=sys.stderr)


def _read(paths):
    """[(path, image or None, error or "")] for a chunk of files."""
    from mixem_tf.data.folder import describe_error, file_problem, read_image

    out = []
    for path in paths:
        problem = file_problem(path)  # never opens a named pipe or a device
        if problem:
            out.append((path, None, problem))
            continue
        try:
            out.append((path, read_image(path), ""))
        except Exception as error:  # noqa: BLE001  any unreadable file is one CSV row
            out.append((path, None, describe_error(error)))
    return out


def _predict_chunk(predict, items):
    """Runs the images of a chunk, grouped by shape; returns {index: (cluster, prob)} and
    {index: error} for groups the model rejected."""
    groups: dict[tuple, list[int]] = {}
    for i, (_, image, _) in enumerate(items):
        if image is not None:
            groups.setdefault(image.shape, []).append(i)
    results, errors = {}, {}
    for indices in groups.values():
        try:
            outputs = predict(np.stack([items[i][1] for i in indices]))
        except Exception as error:  # noqa: BLE001  a batch the model rejects is reported
            errors.update({i: f"model failed: {str(error).splitlines()[0]}" for i in indices})
            continue
        for row, i in enumerate(indices):
            cluster = int(outputs["cluster"][row])
            results[i] = (cluster, float(outputs["probabilities"][row, cluster]))
    return results, errors


def predict_folder(predict, folder, out_csv, *, batch_size: int = 64, gallery=None,
                   gallery_samples: int = 8, gallery_cell: int = 64,
                   gallery_order: str = "random", seed: int = 0, progress: bool = True):
    """Clusters every file under `folder` into `out_csv`; returns (rows written, unreadable).
    The gallery is drawn only when at least one file was clustered."""
    from mixem_tf.data.folder import list_files

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"--images: {folder} is not a folder")
    if batch_size < 1 or gallery_samples < 1 or gallery_cell < 1:
        raise ValueError("--batch-size, --gallery-samples and --gallery-cell must be >= 1")
    sample = _GallerySample(gallery_order, gallery_samples, seed)
    files = list_files(folder)
    bar = _Progress(len(files)) if progress else None
    counts: dict[int, int] = {}
    failures = 0
    Path(out_csv).parent.mkdir(parents=True, exist_ok=True)
    with open(out_csv, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(FIELDS)
        for start in range(0, len(files), batch_size):
            items = _read(files[start:start + batch_size])
            results, model_errors = _predict_chunk(predict, items)
            for i, (path, image, error) in enumerate(items):
                error = error or model_errors.get(i, "")
                if i not in results:
                    failures += 1
                    writer.writerow([str(path), "", "", error])
                    continue
                cluster, probability = results[i]
                writer.writerow([str(path), cluster, f"{probability:.6f}", ""])
                counts[cluster] = counts.get(cluster, 0) + 1
                if gallery is not None:
                    sample.add(cluster, probability, start + i, image)
            if bar:
                bar.update(min(start + batch_size, len(files)), failures)
    if bar:
        bar.close()
    if gallery is not None and counts:
        _write_gallery(predict, sample, counts, gallery, gallery_samples, gallery_cell)
    return len(files), failures


def _write_gallery(predict, sample, counts, path, samples, cell):
    from mixem_tf.gallery import cluster_label, draw_gallery

    known = predict.clusters or {}
    chosen = sample.images()
    rows = max([len(known)] + [k + 1 for k in chosen])
    labels = {}
    for k in range(rows):
        entry = known.get(str(k), {})
        confidence = sample.confidence[k] / counts[k] if counts.get(k) else None
        labels[k] = cluster_label(k, counts.get(k, 0),
                                  entry.get("majority_name", entry.get("majority_label")),
                                  entry.get("purity"), confidence)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    draw_gallery(chosen, labels, rows=rows, columns=samples, cell=cell).save(path)


def main(argv=None):
    parser = ArgumentParser(prog="python -m trainers.predict", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", type=Path,
                        help="SavedModel version folder, or model folder (its newest version)")
    source.add_argument("--onnx", type=Path, help="ONNX file (ONNX Runtime)")
    parser.add_argument("--images", type=Path, required=True, help="folder of images")
    parser.add_argument("--out", type=Path, default=Path("clusters.csv"), help="CSV to write")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--gallery", type=Path, default=None, help="PNG grid per cluster")
    parser.add_argument("--gallery-samples", type=int, default=8,
                        help="images per cluster in the gallery")
    parser.add_argument("--gallery-cell", type=int, default=64, help="gallery cell in pixels")
    parser.add_argument("--gallery-order", choices=GALLERY_ORDERS, default="random",
                        help="which images of each cluster the gallery shows: a random sample "
                             "(default; what the cluster really holds), the most confident, "
                             "or the least confident")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random gallery sample")
    args = parser.parse_args(argv)
    from export.runtime import load_predictor

    predict = load_predictor(saved_model=args.model, onnx=args.onnx)
    total, failures = predict_folder(
        predict, args.images, args.out, batch_size=args.batch_size, gallery=args.gallery,
        gallery_samples=args.gallery_samples, gallery_cell=args.gallery_cell,
        gallery_order=args.gallery_order, seed=args.seed)
    if failures == total:
        raise ValueError(f"clustered 0 of {total} files under {args.images}: "
                         + ("no files there" if not total else
                            f"none is a readable image (reasons: the error column of {args.out})"))
    print(f"clustered {total - failures} of {total} files into {args.out}"
          + (f" ({failures} unreadable: see its error column)" if failures else "")
          + (f"; gallery: {args.gallery}" if args.gallery else ""), file=sys.stderr)


if __name__ == "__main__":
    sys.exit(run(main))
