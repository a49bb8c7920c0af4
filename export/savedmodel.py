"""Export a trained run as a SavedModel in TF Serving's layout.

    python -m export.savedmodel --run runs/digits-mixem --model-name mixem --base-dir models/
    python -m export.savedmodel --run runs/x --require-metric nmi>=0.6 --readout h/l2/kmeans

writes BASE/NAME/VERSION/ (VERSION = the next integer; an existing version is never touched):

    saved_model.pb, variables/        signatures serving_default and serving_bytes
                                      (export/module.py documents inputs and outputs)
    assets/model_card.json            method, dataset, training settings, read-out, metrics,
                                      library versions, creation time
    assets/clusters.json              cluster → majority label and purity on the run's
                                      evaluation data (sizes only when it has no labels)
    assets.extra/tf_serving_warmup_requests
                                      TF Serving's warm-up file: a Predict request per
                                      signature on evaluation images (export/warmup.py)

Everything is checked before anything is written (run, checkpoint, metrics.json,
readout.npz, the metric gates, the evaluation data); the version is written into a hidden
temporary folder next to it and renamed into place at the end. The run is read under its
reader's lock (mixem_tf/runlock.py): a run being trained or re-clustered is refused, as its
newer checkpoint would be paired with older read-out centroids. The run may have been trained
under either Keras backend: the model is rebuilt under TensorFlow from its checkpoint.
"""

from __future__ import annotations

import argparse
import datetime
import json
import operator
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

from mixem_tf.cli import ArgumentParser, run
from mixem_tf.runlock import reads_run

__all__ = ["MetricGate", "export_run", "next_version"]

ASSETS = ("model_card.json", "clusters.json")
WARMUP_IMAGES = 4  # evaluation images in each warm-up request
_COMPARE = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt,
            "==": operator.eq}
_GATE = re.compile(r"^\s*(acc|nmi|ari)\s*(>=|<=|==|>|<)\s*([-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?)\s*$")


class MetricGate:
    """`--require-metric nmi>=0.6`: a read-out metric (acc, nmi, ari) must pass a comparison,
    as TFX's evaluator blesses a model before it is pushed."""

    def __init__(self, text: str):
        match = _GATE.match(text)
        if not match:
            raise ValueError(f"--require-metric {text!r}: expected METRIC OP VALUE with METRIC "
                             "acc, nmi or ari and OP one of >=, >, <=, <, ==; e.g. nmi>=0.6")
        self.metric, self.op, self.value = match.group(1), match.group(2), float(match.group(3))

    def __str__(self):
        return f"{self.metric}{self.op}{self.value:g}"

    def check(self, row: dict, what: str) -> None:
        """ValueError unless the read-out `row` passes."""
        if self.metric not in row:
            raise ValueError(f"refusing to export: {what} has no {self.metric} (its evaluation "
                             f"data had no labels), so --require-metric {self} cannot pass")
        if not _COMPARE[self.op](row[self.metric], self.value):
            raise ValueError(f"refusing to export: {what} has {self.metric} = "
                             f"{row[self.metric]:.4f}, which fails --require-metric {self}")


def next_version(model_dir) -> int:
    """1 + the largest integer version folder in `model_dir` (1 when there is none)."""
    model_dir = Path(model_dir)
    versions = [int(p.name) for p in model_dir.iterdir()
                if p.is_dir() and p.name.isdigit()] if model_dir.is_dir() else []
    return max(versions, default=0) + 1


def _clusters_table(assignments, labels, num_clusters, class_names) -> dict:
    """clusters.json: per cluster its size, and with labels its majority label and purity."""
    import numpy as np

    from mixem_tf.metrics import cluster_to_class

    sizes = np.bincount(assignments, minlength=num_clusters)
    if labels is None:
        return {"labels_available": False,
                "note": "the evaluation data has no labels: cluster sizes only",
                "clusters": {str(k): {"size": int(n)} for k, n in enumerate(sizes)}}
    table = cluster_to_class(labels, assignments)
    clusters = {}
    for k in range(num_clusters):
        entry = table.get(k, {"majority_label": None, "purity": None, "size": 0})
        if class_names and entry["majority_label"] is not None:
            entry = {**entry, "majority_name": class_names[entry["majority_label"]]}
        clusters[str(k)] = entry
    return {"labels_available": True,
            "note": "majority label and purity of each cluster on the run's evaluation images",
            "clusters": clusters}


def _model_card(run_dir, saved, config, readout, metrics, module, checkpoint) -> dict:
    from mixem_tf.versions import library_versions

    return {
        "method": config.method, "dataset": config.dataset,
        "source_run": str(Path(run_dir).resolve()), "checkpoint": checkpoint,
        "training_backend": saved.get("backend"), "training": saved["settings"],
        "num_clusters": module.num_clusters, "input_shape": list(module.input_shape),
        "readout": {"key": readout.key, "feature": readout.feature,
                    "normalize": readout.normalize, "clustering": readout.spec.kind,
                    "temperature": None if module.argmax else readout.temperature,
                    "temperature_from": None if module.argmax else (
                        "label-free: fitted to the clusters of augmented views"
                        if "label_free" in readout.row else "K-means inertia per image"),
                    "embedding": f"{module.feature}" + (" (L2-normalised)"
                                                        if module.normalize else "")},
        "metrics": {"evaluate_on": metrics.get("evaluate_on"),
                    "evaluation_images": metrics.get("evaluation_images"),
                    **{k: readout.row[k] for k in ("acc", "nmi", "ari") if k in readout.row},
                    "all_readouts": metrics["readouts"]},
        "outputs": {
            "cluster": "int64 [N]: cluster id",
            "probabilities": (f"float32 [N, K]: {readout.feature}, the method's assignment"
                              if module.argmax else
                              "float32 [N, K]: softmax(-distances / temperature)"),
            "distances": (f"float32 [N, K]: 1 - {readout.feature}" if module.argmax else
                          "float32 [N, K]: squared Euclidean distance to each centroid"),
            "embedding": "float32 [N, D]: the read-out's feature",
        },
        "signatures": {"serving_default": "images: uint8 [N, H, W, C], any H, W > 0; C 1-4",
                       "serving_bytes": "image_bytes: string [N], JPEG/PNG/BMP/GIF/WebP, at "
                                        f"most {module.max_image_pixels} pixels each"},
        "versions": {"training": saved.get("versions"), "export": library_versions()},
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
    }


@reads_run
def export_run(run_dir, base_dir, model_name: str, *, readout: str | None = None,
               require=(), max_image_pixels: int | None = None,
               verbose: bool = True) -> Path:
    """Exports `run_dir` to BASE/NAME/VERSION and returns that folder (see module docstring).

    Raises:
        ValueError: no run, checkpoint, metrics or read-out; a failed or unparsable gate;
            a bad model name; RunLockedError: another process writes the run. DatasetUnavailableError: the evaluation data cannot be loaded.
    """
    from mixem_tf import checkpoints
    from mixem_tf.settings import TrainConfig
    from mixem_tf.features import evaluation_features
    from mixem_tf.readouts import load_metrics, load_readout
    from mixem_tf.runs import load_evaluation, load_run, load_run_config

    from export.module import ClusteringModule
    from export.warmup import warmup_requests, write_warmup

    import keras

    if keras.backend.backend() != "tensorflow":
        raise ValueError("exporting needs KERAS_BACKEND=tensorflow (the run itself may have "
                         f"been trained under any backend), not {keras.backend.backend()}")
    if not model_name or "/" in model_name or model_name.startswith("."):
        raise ValueError(f"--model-name {model_name!r}: a plain folder name is needed")
    gates = [g if isinstance(g, MetricGate) else MetricGate(g) for g in require]
    saved = load_run_config(run_dir)
    latest = checkpoints.latest_checkpoint(Path(run_dir) / "checkpoints")
    if latest is None:
        raise ValueError(f"--run: {run_dir} has no checkpoint")
    metrics = load_metrics(run_dir)
    chosen = load_readout(run_dir, readout)
    for gate in gates:
        gate.check(chosen.row, f"{run_dir} (read-out {chosen.key})")
    evaluation = load_evaluation(TrainConfig.from_dict(saved["settings"]))

    import tensorflow as tf

    model, config, saved = load_run(run_dir)
    from export.inputs import DEFAULT_MAX_IMAGE_PIXELS

    module = ClusteringModule(model, chosen, saved["input_shape"],
                              max_image_pixels=max_image_pixels or DEFAULT_MAX_IMAGE_PIXELS)
    assignments = chosen.assign(evaluation_features(run_dir, model=model,
                                                    evaluation=evaluation))
    clusters = _clusters_table(assignments, evaluation.labels, module.num_clusters,
                               getattr(evaluation, "class_names", None))
    card = _model_card(run_dir, saved, config, chosen, metrics, module,
                       {"file": latest[0].name, "epoch": latest[1].get("epoch")})

    model_dir = Path(base_dir) / model_name
    model_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=model_dir, prefix=".export-"))
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's 0700 would hide the model from a server
        assets = tmp / "assets"
        assets.mkdir()
        card_path, clusters_path = assets / ASSETS[0], assets / ASSETS[1]
        tf.saved_model.save(module, str(tmp), signatures=module.signatures())
        write_warmup(tmp, warmup_requests(evaluation.images[:WARMUP_IMAGES], model_name))
        card_path.write_text(json.dumps(card, indent=2))
        clusters_path.write_text(json.dumps(clusters, indent=2))
        while True:
            target = model_dir / str(next_version(model_dir))
            try:
                os.rename(tmp, target)
                break
            except OSError:
                if not target.exists():
                    raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if verbose:
        print(f"exported {run_dir} (read-out {chosen.key}, K = {module.num_clusters}) to "
              f"{target}", file=sys.stderr)
    return target


def main(argv=None):
    parser = ArgumentParser(prog="python -m export.savedmodel", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="trained run directory")
    parser.add_argument("--model-name", default=None, help="model folder (default: the method)")
    parser.add_argument("--base-dir", type=Path, default=Path("models"),
                        help="base folder of TF Serving's layout (default: models/)")
    parser.add_argument("--readout", default=None,
                        help="FEATURE/l2|raw/KIND[@K], any read-out the run stores (trainers.recluster "
                             "adds more; default: the run's default read-out)")
    parser.add_argument("--require-metric", action="append", default=[], metavar="GATE",
                        help="e.g. nmi>=0.6 (repeatable): refuse to export below it")
    parser.add_argument("--max-image-pixels", type=int, default=None,
                        help="serving_bytes refuses an image whose header claims more pixels "
                             "(height x width; default 4096 x 4096 = 16777216)")
    args = parser.parse_args(argv)
    if args.max_image_pixels is not None and args.max_image_pixels < 1:
        raise ValueError(f"--max-image-pixels must be >= 1, got {args.max_image_pixels}")
    gates = [MetricGate(text) for text in args.require_metric]  # parse errors before any work
    name = args.model_name
    if name is None:
        from mixem_tf.runs import load_run_config

        name = load_run_config(args.run)["settings"]["method"]
    target = export_run(args.run, args.base_dir, name, readout=args.readout, require=gates,
                        max_image_pixels=args.max_image_pixels)
    print(target)


if __name__ == "__main__":
    sys.exit(run(main))
