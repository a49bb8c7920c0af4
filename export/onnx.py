"""Convert an exported SavedModel's `serving_default` to ONNX, and prove the file is right.

    python -m export.onnx --saved-model models/mixem/1 --out mixem.onnx
    python -m export.onnx --saved-model models/mixem/1 --out mixem.onnx --parity-images DIR

The ONNX graph is the whole `serving_default` signature (export/module.py): uint8 images
`[N, H, W, C]` of any size in, channel conversion, resizing, normalisation, encoder and
clustering head inside, the same four outputs (`cluster`, `probabilities`, `distances`,
`embedding`) out. `serving_bytes` is not converted: ONNX has no image decoding.

tf2onnx (opset `DEFAULT_OPSET` unless --opset) exits quietly on ops it cannot convert; here any
converter message about an unsupported or unconvertible op is an error and no file is
written. The converted graph is made loadable beyond ONNX Runtime (`drop_empty_unsqueezes`;
the export graph itself has no tf.cond, which OpenVINO mishandles). Then parity: on real images
(the run's evaluation images, also as RGB at another size, or the images in --parity-images)
the embeddings of ONNX Runtime and of OpenVINO (where the `openvino` package is installed) must
match TensorFlow's within `TOLERANCE` (max abs) with identical cluster ids, and ONNX's
reference evaluator (`onnx.reference`, on the first `REFERENCE_IMAGES` images: it is slow)
must agree too. The
file is written (to a temporary file next to --out, renamed into place) only after every check
passed, and a failed parity check deletes an existing --out; the file's metadata records the source SavedModel,
the opset and the parity report.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import re
import sys
import tempfile
from pathlib import Path

import numpy as np

from mixem_tf.cli import ArgumentParser, run

__all__ = ["ConversionError", "ParityError", "check_parity", "convert_saved_model",
           "drop_empty_unsqueezes", "export_onnx", "parity_images"]

DEFAULT_OPSET = 17
TOLERANCE = 1e-4
PARITY_IMAGES = 64
REFERENCE_IMAGES = 8
SIGNATURE = "serving_default"
_BAD_MESSAGE = re.compile(r"unsupported|not supported|could not convert|failed to convert|"
                          r"cannot convert", re.IGNORECASE)


class ConversionError(ValueError):
    """tf2onnx could not convert every op."""


class ParityError(ValueError):
    """The ONNX model's outputs differ from TensorFlow's."""


@contextlib.contextmanager
def _captured_converter_log():
    """Collects tf2onnx's log records (warnings and worse) while converting."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setLevel(logging.WARNING)
    logger = logging.getLogger("tf2onnx")
    logger.addHandler(handler)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)


class _NoDeprecationNotices(logging.Filter):
    """Drops TensorFlow's notices that a TF1 API tf2onnx calls is deprecated (not ours to
    act on); TensorFlow's other messages pass."""

    def filter(self, record):
        return "is deprecated and will be removed" not in record.getMessage()


@contextlib.contextmanager
def _tensorflow_deprecations_silenced():
    logger, notices = logging.getLogger("tensorflow"), _NoDeprecationNotices()
    logger.addFilter(notices)
    try:
        yield
    finally:
        logger.removeFilter(notices)


def convert_saved_model(saved_model, opset: int = DEFAULT_OPSET):
    """The ONNX ModelProto of `saved_model`'s serving_default (tf2onnx's Python API).

    Raises:
        ConversionError: the converter logged an unsupported or unconvertible op (or failed).
    """
    from tf2onnx import convert, tf_loader

    with _captured_converter_log() as log, _tensorflow_deprecations_silenced():
        try:
            graph_def, inputs, outputs, renames = tf_loader.from_saved_model(
                str(saved_model), None, None, tag=["serve"], signatures=[SIGNATURE],
                return_tensors_to_rename=True)
            model, _ = convert.from_graph_def(graph_def, input_names=inputs,
                                              output_names=outputs, opset=opset,
                                              tensors_to_rename=renames)
        except Exception as error:  # tf2onnx raises many kinds; all mean "no model"
            raise ConversionError(f"tf2onnx could not convert {saved_model}: {error}") from error
    bad = [line for line in log.getvalue().splitlines() if _BAD_MESSAGE.search(line)]
    if bad:
        raise ConversionError(f"tf2onnx could not convert every op of {saved_model} (opset "
                              f"{opset}): " + "; ".join(bad[:5]))
    return drop_empty_unsqueezes(model)


def drop_empty_unsqueezes(model):
    """Replaces each ``Unsqueeze`` whose axes are an empty constant (a no-op tf2onnx writes for
    some einsums) with ``Identity``: ONNX Runtime accepts it, OpenVINO refuses to load it."""
    from onnx import numpy_helper

    constants = {init.name: init for init in model.graph.initializer}
    for node in model.graph.node:
        if (node.op_type == "Unsqueeze" and len(node.input) == 2 and node.input[1] in constants
                and numpy_helper.to_array(constants[node.input[1]]).size == 0):
            node.op_type = "Identity"
            del node.input[1:]
    return model


def parity_images(saved_model, folder=None, limit: int = PARITY_IMAGES) -> list[np.ndarray]:
    """Batches of real uint8 images to compare on: the images in `folder` (one batch per
    size), else the run's evaluation images as trained and as RGB at twice the size."""
    if folder is not None:
        from mixem_tf.data.folder import list_files, read_image

        groups: dict[tuple, list] = {}
        for path in list_files(Path(folder))[:limit]:
            try:
                image = read_image(path)
            except Exception:  # parity wants images; anything else is skipped
                continue
            groups.setdefault(image.shape, []).append(image)
        if not groups:
            raise ValueError(f"--parity-images: {folder} holds no readable image")
        return [np.stack(images) for images in groups.values()]
    from mixem_tf.settings import TrainConfig
    from mixem_tf.runs import load_evaluation

    card = json.loads((Path(saved_model) / "assets" / "model_card.json").read_text())
    images = load_evaluation(TrainConfig.from_dict(card["training"])).images[:limit]
    bigger = np.repeat(np.repeat(images, 2, axis=1), 2, axis=2)
    rgb = bigger if bigger.shape[-1] == 3 else np.repeat(bigger[..., :1], 3, axis=-1)
    return [images, rgb]


def _openvino_session(onnx_model):
    """OpenVINO's CPU runtime on the model, in float32 (on CPUs with bfloat16 units its default
    precision is bfloat16, which moves embeddings by ~1e-3), as a `session.run`-like call; None
    where the `openvino` package is not installed."""
    try:
        import openvino
    except ImportError:
        return None
    core = openvino.Core()
    compiled = core.compile_model(core.read_model(onnx_model.SerializeToString()), "CPU",
                                  {"INFERENCE_PRECISION_HINT": "f32"})
    outputs = [output.get_any_name() for output in compiled.outputs]

    def run(_, feeds):
        result = compiled(feeds)
        return [result[name] for name in outputs]

    return run


def check_parity(onnx_model, saved_model, batches, reference_images: int = REFERENCE_IMAGES):
    """Compares ONNX Runtime, OpenVINO (where installed) and ONNX's reference evaluator with
    TensorFlow on `batches`.

    Returns:
        {"onnxruntime": {output: max abs difference}, "openvino": {...} (where installed),
        "reference": {...}, "images": count}.

    Raises:
        ParityError: an embedding differs by more than TOLERANCE, or a cluster id differs.
    """
    import onnxruntime
    import tensorflow as tf
    from onnx.reference import ReferenceEvaluator

    loaded = tf.saved_model.load(str(saved_model))
    serve = loaded.signatures[SIGNATURE]
    session = onnxruntime.InferenceSession(onnx_model.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    reference = ReferenceEvaluator(onnx_model)
    openvino = _openvino_session(onnx_model)
    names = [output.name for output in onnx_model.graph.output]
    report = {"onnxruntime": {}, "reference": {}, "images": 0}
    if openvino is not None:
        report["openvino"] = {}
    for batch in batches:
        expected = {k: v.numpy() for k, v in serve(images=tf.constant(batch)).items()}
        runs = {"onnxruntime": (session.run(None, {"images": batch}), batch),
                "reference": (reference.run(None, {"images": batch[:reference_images]}),
                              batch[:reference_images])}
        if openvino is not None:
            runs["openvino"] = (openvino(None, {"images": batch}), batch)
        for runtime, (outputs, used) in runs.items():
            got = dict(zip(names, outputs))
            for name in names:
                want = expected[name][:len(used)]
                diff = float(np.abs(got[name].astype(np.float64) - want).max()) if len(used) else 0.0
                report[runtime][name] = max(report[runtime].get(name, 0.0), diff)
            if not np.array_equal(got["cluster"], expected["cluster"][:len(used)]):
                raise ParityError(f"{runtime}: cluster ids differ from TensorFlow's on images "
                                  f"of shape {batch.shape[1:]}")
            if report[runtime]["embedding"] > TOLERANCE:
                raise ParityError(f"{runtime}: embedding differs from TensorFlow's by "
                                  f"{report[runtime]['embedding']:.2e} > {TOLERANCE:g}")
        report["images"] += len(batch)
    return report


def _describe(model, saved_model, opset, report) -> None:
    """Records the source, opset and parity report in the ONNX file's metadata."""
    import onnx

    card_path = Path(saved_model) / "assets" / "model_card.json"
    card = json.loads(card_path.read_text()) if card_path.is_file() else {}
    onnx.helper.set_model_props(model, {
        "source_saved_model": str(Path(saved_model).resolve()), "signature": SIGNATURE,
        "opset": str(opset), "parity": json.dumps(report),
        "readout": json.dumps(card.get("readout")), "method": str(card.get("method")),
        "dataset": str(card.get("dataset"))})


def export_onnx(saved_model, out, *, opset: int = DEFAULT_OPSET, parity_folder=None,
                verbose: bool = True) -> dict:
    """Converts, checks parity, and writes `out`; returns the parity report.

    Raises:
        FileNotFoundError: no SavedModel at `saved_model`.
        ConversionError: nothing is written.
        ParityError: nothing is written, and an existing `out` is deleted.
    """
    saved_model, out = Path(saved_model), Path(out)
    if not (saved_model / "saved_model.pb").is_file():
        raise FileNotFoundError(f"--saved-model: {saved_model} holds no saved_model.pb "
                                "(give a version folder, e.g. models/mixem/1)")
    batches = parity_images(saved_model, parity_folder)
    model = convert_saved_model(saved_model, opset)
    try:
        report = check_parity(model, saved_model, batches)
    except ParityError as error:
        if out.exists():  # an older file at --out must not pass for this conversion
            out.unlink()
            raise ParityError(f"{error}; removed the existing {out}") from None
        raise
    _describe(model, saved_model, opset, report)
    out.parent.mkdir(parents=True, exist_ok=True)
    descriptor, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(descriptor)
    try:
        Path(tmp).write_bytes(model.SerializeToString())
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if verbose:
        worst = {k: f"{v:.1e}" for k, v in report["onnxruntime"].items()}
        others = ", ".join(f"{runtime} embedding {report[runtime]['embedding']:.1e}"
                           for runtime in ("openvino", "reference") if runtime in report)
        print(f"wrote {out} (opset {opset}); parity on {report['images']} images: "
              f"onnxruntime max abs {worst}, {others}, clusters identical", file=sys.stderr)
    return report


def main(argv=None):
    parser = ArgumentParser(prog="python -m export.onnx", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--saved-model", type=Path, required=True,
                        help="a SavedModel version folder written by export.savedmodel")
    parser.add_argument("--out", type=Path, required=True, help="the .onnx file to write")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                        help=f"ONNX opset (default {DEFAULT_OPSET})")
    parser.add_argument("--parity-images", type=Path, default=None,
                        help="folder of images for the parity check (default: the run's "
                             "evaluation images)")
    args = parser.parse_args(argv)
    export_onnx(args.saved_model, args.out, opset=args.opset, parity_folder=args.parity_images)
    print(args.out)


if __name__ == "__main__":
    sys.exit(run(main))
