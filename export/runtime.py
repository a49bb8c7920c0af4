"""Running an exported model: the SavedModel under TensorFlow or the ONNX file under ONNX
Runtime, behind one call (uint8 batch in, numpy outputs out).

Example:
    >>> predict = load_predictor(saved_model="models/mixem/1")   # or onnx="mixem.onnx"
    >>> predict(images)["cluster"]                                # images: uint8 [N, H, W, C]
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

__all__ = ["Predictor", "load_predictor"]


class Predictor:
    """A loaded exported model; `predict(images)` → {output name: numpy array}.

    Attributes:
        runtime: "tensorflow" or "onnxruntime".
        clusters: the SavedModel's assets/clusters.json ("clusters" entries), or None.
    """

    def __init__(self, run, runtime: str, clusters: dict | None = None, owner=None):
        self._run, self.runtime, self.clusters = run, runtime, clusters
        self._owner = owner  # what `run` needs alive (the loaded SavedModel)

    def __call__(self, images: np.ndarray) -> dict:
        return self._run(np.ascontiguousarray(images, dtype=np.uint8))


def _version_folder(path: Path) -> Path:
    """`path` itself if it holds a SavedModel, else its newest integer version (as TF Serving
    picks one from a model folder)."""
    if (path / "saved_model.pb").is_file():
        return path
    versions = sorted((int(p.name), p) for p in path.glob("*")
                      if p.name.isdigit() and (p / "saved_model.pb").is_file()) \
        if path.is_dir() else []
    if not versions:
        raise FileNotFoundError(f"--model: {path} holds no saved_model.pb and no version "
                                "folder with one (e.g. models/mixem/1)")
    return versions[-1][1]


def load_predictor(saved_model=None, onnx=None, threads: int | None = None) -> Predictor:
    """Loads exactly one of `saved_model` (a version folder, or a model folder: its newest
    version) or `onnx` (a .onnx file).

    Raises:
        ValueError: both or neither given. FileNotFoundError: the model is not there.
    """
    if (saved_model is None) == (onnx is None):
        raise ValueError("give either a SavedModel (--model) or an ONNX file (--onnx)")
    if onnx is not None:
        import onnxruntime

        if not Path(onnx).is_file():
            raise FileNotFoundError(f"--onnx: {onnx} does not exist")
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        session = onnxruntime.InferenceSession(str(onnx), options,
                                               providers=["CPUExecutionProvider"])
        names = [output.name for output in session.get_outputs()]
        return Predictor(lambda x: dict(zip(names, session.run(None, {"images": x}))),
                         "onnxruntime")
    saved_model = _version_folder(Path(saved_model))
    import tensorflow as tf

    loaded = tf.saved_model.load(str(saved_model))
    serve = loaded.signatures["serving_default"]
    clusters_file = Path(saved_model) / "assets" / "clusters.json"
    clusters = (json.loads(clusters_file.read_text())["clusters"] if clusters_file.is_file()
                else None)
    return Predictor(lambda x: {k: v.numpy() for k, v in serve(images=tf.constant(x)).items()},
                     "tensorflow", clusters, owner=loaded)
