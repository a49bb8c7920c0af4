"""Save a trained run as a Keras file: the model a Keras user expects to be handed.

    python -m export.keras_model --run runs/digits-mixem --out mixem.keras

The file holds the method's model (backbone, heads, augmentation settings, options) and its
latest checkpoint's weights; `keras.saving.load_model("mixem.keras")` rebuilds it under either
Keras backend once `mixem_tf.methods.import_models()` has run (it registers the classes). The
model's `predict(uint8_images)` gives the evaluation features (e.g. {"h", "z"}); the read-outs' K-means
centroids are not part of it (export.savedmodel serves those). The file is written beside its
destination and moved into place, so a failed save leaves nothing behind.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from mixem_tf.cli import ArgumentParser, run
from mixem_tf.runlock import reads_run

__all__ = ["save_keras_model"]


@reads_run
def save_keras_model(run_dir, out) -> Path:
    """Writes `run_dir`'s model (latest checkpoint) to `out` (a `.keras` path) and returns it.

    Raises:
        ValueError: no run or no checkpoint in `run_dir`, or `out` does not end in .keras.
            RunLockedError: another process writes the run (mixem_tf/runlock.py).
    """
    from mixem_tf.runs import load_run

    out = Path(out)
    if out.suffix != ".keras":
        raise ValueError(f"--out {out}: a Keras model file must end in .keras")
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder")
    model, _, _ = load_run(run_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.stem}.partial.keras")
    try:
        model.save(partial)
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    return out


def main(argv=None) -> int:
    parser = ArgumentParser(prog="python -m export.keras_model", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, type=Path, help="the trained run's folder")
    parser.add_argument("--out", required=True, type=Path, help="the .keras file to write")
    args = parser.parse_args(argv)
    print(save_keras_model(args.run, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
