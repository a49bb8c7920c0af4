"""Reading a finished run directory back: its settings, model and evaluation data (its
read-outs: `mixem_tf.readouts`).

One place knows how a run is rebuilt, for `--init-from`, export and anything else that starts
from a trained run. It works under either backend, whatever backend the run was trained under
(checkpoints are plain `.npz` arrays).

Example:
    >>> model, config, saved = load_run("runs/digits-mixem")
    >>> evaluation = load_evaluation(config)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mixem_tf import checkpoints
from mixem_tf.settings import TrainConfig

__all__ = ["CONFIG_FILE", "load_evaluation", "load_run", "load_run_config", "load_run_data"]

CONFIG_FILE = "config.json"
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


def load_run_data(config: TrainConfig):
    """(train, evaluation) of a run's settings: its protocol, data folder and image size, and
    with `folder_labels="none"` a folder's sub-folder names are not taken as labels."""
    import dataclasses

    from mixem_tf.data import load_protocol

    train, evaluation = load_protocol(
        config.dataset, train_on=config.train_on, evaluate_on=config.evaluate_on,
        data_dir=config.data_dir,
        image_size=config.image_size if config.dataset.startswith("folder:") else None)
    if config.folder_labels == "none":
        train, evaluation = (dataclasses.replace(data, labels=None, num_classes=None,
                                                 class_names=None)
                             for data in (train, evaluation))
    return train, evaluation


def load_evaluation(config: TrainConfig):
    """The run's evaluation dataset (as `load_run_data`)."""
    return load_run_data(config)[1]
