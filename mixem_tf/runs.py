"""Reading a finished run directory back: its settings, model, read-outs and evaluation data.

One place knows how a run is rebuilt, for `--init-from`, export and anything else that starts
from a trained run. It works under either backend, whatever backend the run was trained under
(checkpoints are plain `.npz` arrays).

Example:
    >>> model, config, saved = load_run("runs/digits-mixem")
    >>> readout = load_readout("runs/digits-mixem")          # the default read-out
    >>> readout.centroids.shape                              # (K, D), None for the argmax
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mixem_tf import checkpoints
from mixem_tf.cluster import CENTROID_CLUSTERINGS
from mixem_tf.settings import TrainConfig

__all__ = ["CONFIG_FILE", "Readout", "load_evaluation", "load_readout", "load_run",
           "load_run_config", "parse_readout", "readout_key"]

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
READOUT_FILE = "readout.npz"
OCCUPANCY_FILE = "occupancy.jsonl"  # a method's cluster shares per epoch (ClusterSizeMonitor)


def load_run_config(run_dir, flag: str = "--run") -> dict:
    """The run's `config.json` as a dict; ValueError (naming `flag`) if there is none."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise ValueError(f"{flag}: {run_dir} holds no run (no {CONFIG_FILE})")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{flag}: {path} is not valid JSON ({error})") from None


def load_run(run_dir, flag: str = "--run"):
    """(model, TrainConfig, saved config.json) of a run, weights from its latest checkpoint.

    The model is built under the current Keras backend and called once on zeros, so every
    variable exists before the checkpoint is restored.

    Raises:
        ValueError: no run, or no checkpoint, in `run_dir`.
        CheckpointMismatchError: the checkpoint does not fit the model its settings describe.
    """
    from mixem_tf.methods import build_method

    run_dir = Path(run_dir)
    saved = load_run_config(run_dir, flag)
    latest = checkpoints.latest_checkpoint(run_dir / "checkpoints")
    if latest is None:
        raise ValueError(f"{flag}: {run_dir} has no checkpoint")
    config = TrainConfig.from_saved(saved["settings"])
    input_shape = tuple(saved["input_shape"])
    model = build_method(config, input_shape, saved["num_clusters"])
    model(np.zeros((2, *input_shape), np.uint8))
    checkpoints.restore(latest[0], model)
    return model, config, saved


def readout_key(row: dict, sep: str = "/") -> str:
    """A read-out row's name: `FEATURE/l2|raw/CLUSTERING` (`--readout`); with `sep="_"`, its
    array name in readout.npz."""
    return sep.join((row["feature"], "l2" if row["normalize"] else "raw", row["clustering"]))


@dataclass(frozen=True)
class Readout:
    """One row of a run's read-out table, with its centroids.

    Attributes:
        feature: the model output it clusters ("h", "z", "e_max"; "pi" for the argmax).
        normalize: whether the feature is L2-normalised first.
        clustering: "kmeans", "kmeans_component_init", or a method's own assignment
            ("mixture_argmax", "argmax").
        centroids: float32 [K, D] K-means centres in the (normalised) feature space; None for
            a method's own assignment.
        row: the metrics.json row (acc, nmi, ari, cluster_sizes, default).
    """

    feature: str
    normalize: bool
    clustering: str
    centroids: np.ndarray | None
    row: dict

    @property
    def key(self) -> str:
        """`FEATURE/l2|raw/CLUSTERING`, as `--readout` spells it."""
        return readout_key(self.row)


def parse_readout(text: str) -> tuple[str, bool, str]:
    """`"h/l2/kmeans"` → ("h", True, "kmeans"); ValueError on anything else."""
    parts = text.split("/")
    if len(parts) != 3 or parts[1] not in ("l2", "raw") or not parts[0] or not parts[2]:
        raise ValueError(f"--readout {text!r}: expected FEATURE/l2|raw/CLUSTERING, "
                         "e.g. h/l2/kmeans")
    return parts[0], parts[1] == "l2", parts[2]


def load_metrics(run_dir) -> dict:
    """The run's metrics.json; ValueError if missing (the run has not been evaluated)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        raise ValueError(f"{run_dir} has no {METRICS_FILE}: the run did not finish its "
                         "evaluation")
    return json.loads(path.read_text())


def load_readout(run_dir, choice: str | None = None) -> Readout:
    """The run's default read-out (the metrics.json row marked default) or `choice`
    (`FEATURE/l2|raw/CLUSTERING`), with its centroids from readout.npz.

    Raises:
        ValueError: metrics.json or readout.npz missing, or no such read-out.
    """
    run_dir = Path(run_dir)
    rows = load_metrics(run_dir)["readouts"]
    keys = [readout_key(row) for row in rows]
    if choice is None:
        index = next((i for i, row in enumerate(rows) if row.get("default")), None)
        if index is None:
            raise ValueError(f"{run_dir}/{METRICS_FILE} marks no default read-out; pick one "
                             f"with --readout (one of {', '.join(keys)})")
    else:
        feature, normalize, clustering = parse_readout(choice)
        wanted = readout_key({"feature": feature, "normalize": normalize,
                              "clustering": clustering})
        if wanted not in keys:
            raise ValueError(f"--readout {choice}: the run has no such read-out; choose from "
                             f"{', '.join(keys)}")
        index = keys.index(wanted)
    row = rows[index]
    centroids = None
    if row["clustering"] in CENTROID_CLUSTERINGS:
        path = run_dir / READOUT_FILE
        if not path.is_file():
            raise ValueError(f"{run_dir} has no {READOUT_FILE} (the read-outs' centroids)")
        name = readout_key(row, sep="_")
        with np.load(path) as archive:
            if name not in archive.files:
                raise ValueError(f"{path} holds no centroids for read-out {keys[index]}")
            centroids = archive[name].astype(np.float32)
    return Readout(row["feature"], bool(row["normalize"]), row["clustering"], centroids, row)


def load_evaluation(config: TrainConfig):
    """The run's evaluation dataset (same protocol, data folder and image size as training)."""
    from mixem_tf.data import load_protocol

    return load_protocol(
        config.dataset, train_on=config.train_on, evaluate_on=config.evaluate_on,
        data_dir=config.data_dir,
        image_size=config.image_size if config.dataset.startswith("folder:") else None,
    ).evaluation
