"""Train a clustering method and print its read-out table.

    python -m trainers.fit --dataset=fashion_mnist --method=simclr --out runs/fmnist
    python -m trainers.fit --out runs/fmnist --resume
    python -m trainers.fit --config my_run.json --epochs 5

Settings come from the method's recipe for the dataset (its `recipe` in
mixem_tf/methods/declarations/; a folder without a GPU, or with --backbone convnet, gets the
CPU recipe), then from --config (a JSON object of TrainConfig fields and the method's options,
at the top level or under "options"), then from the flags given here.

One command at a time may write a run: another on the same --out is refused, naming it.
SIGTERM or Ctrl-C stops at the end of the current step, keeps every finished epoch, says how to
resume and exits 143 (SIGTERM) or 130 (SIGINT); a full disk exits 1 naming the checkpoints kept.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from mixem_tf.cli import ArgumentParser, read_json_object, run
from mixem_tf.data.registry import DATASET_NAMES
from mixem_tf.methods import METHODS
from mixem_tf.settings import TrainConfig

FLAGS = {  # flag → (type, help); each maps onto the TrainConfig field of the same name
    "dataset": (str, ", ".join(DATASET_NAMES)),
    "method": (str, "the clustering method: " + ", ".join(sorted(METHODS)) + " (default mixem)"),
    "data_dir": (str, "where the dataset's files are (TFDS data_dir or IDX folder)"),
    "train_on": (str, "whole (train+test) or train; default: the method's paper protocol"),
    "evaluate_on": (str, "test or all; default: the method's paper protocol"),
    "image_size": (int, "training resolution in pixels"),
    "backbone": (str, "resnet18, resnet34 or convnet"),
    "backbone_width": (int, "backbone base width (ResNet: 64, ConvNet: 32 by default)"),
    "stem": (str, "ResNet stem: cifar or imagenet (default: by image size)"),
    "clusters": (str, "K; 'auto' (K from 2 to 20) or a range A..B chooses K without labels "
                      "after training (default: the dataset's class count)"),
    "epochs": (int, "training epochs"),
    "batch_size": (int, "global batch size (at least 2)"),
    "lr": (float, "base learning rate"),
    "optimizer": (str, "adam or sgd"),
    "weight_decay": (float, "weight decay λ"),
    "weight_decay_mode": (str, "coupled (L2 in the loss, as the papers) or decoupled (AdamW)"),
    "seed": (int, "random seed"),
    "precision": (str, "float32, mixed_bfloat16 or mixed_float16"),
    "strategy": (str, "default, mirrored or multiworker"),
    "readout_settings": (str, "K-means budget of the read-outs: official or sklearn"),
    "init_from": (str, "start the backbone from this run's latest checkpoint (e.g. SimCLR); the "
                       "scan and selflabel stages refine that run"),
    "folder_labels": (str, "folder:PATH: subfolders (sub-folder names score the clusters) or "
                           "none"),
}


def _shown(default) -> str:
    return "" if default is None else f" (default {default})"


def option_flags() -> dict:
    """Every method's own options as flags: name → (type, help naming each method that has it,
    with its text and default)."""
    parsers = {int: int, float: float, str: str, dict: json.loads}
    kinds, owners = {}, {}
    for method in sorted(METHODS.values(), key=lambda m: m.title):
        for name, spec in method.Options.fields().items():
            default = spec.default if spec.default is not dataclasses.MISSING else {}
            kinds.setdefault(name, parsers[spec.metadata["kind"]])
            owners.setdefault(name, []).append((method.title, spec.metadata["help"], default))
    helps = {}
    for name, entries in owners.items():
        if len({(text, str(default)) for _, text, default in entries}) == 1:
            titles = ", ".join(title for title, _, _ in entries)
            text = f"{titles}: {entries[0][1]}{_shown(entries[0][2])}"
        else:
            text = "; ".join(f"{title}: {text}{_shown(default)}"
                            for title, text, default in entries)
        helps[name] = (kinds[name], text)
    return helps


OPTION_FLAGS = option_flags()


def parse_args(argv):
    parser = ArgumentParser(prog="python -m trainers.fit", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, (kind, text) in FLAGS.items():
        parser.add_argument("--" + name.replace("_", "-"), dest=name, type=kind, default=None,
                            help=text)
    group = parser.add_argument_group("method options (each applies to the methods it names)")
    for name, (kind, text) in OPTION_FLAGS.items():
        group.add_argument("--" + name.replace("_", "-"), dest=name, type=kind, default=None,
                           help=text)
    parser.add_argument("--config", type=Path, help="JSON file of settings")
    parser.add_argument("--out", type=Path, help="run directory (default: runs/DATASET-METHOD)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing --out (its contents: a --out that is a link "
                             "to another disk stays a link)")
    parser.add_argument("--deterministic", action="store_true",
                        help="deterministic TensorFlow ops (slower; for exact reproduction)")
    parser.add_argument("--readouts", default="all", choices=("default", "all", "paper"),
                        help="read-outs fitted after training: the default one; all (the "
                             "others at a smaller K-means budget; default); paper (all at the "
                             "papers' budget)")
    parser.add_argument("--quiet", action="store_true",
                        help="no per-epoch progress (the time estimate and warnings stay)")
    return parser.parse_args(argv)


def config_from_args(args) -> TrainConfig:
    values = read_json_object(args.config, "--config") if args.config else {}
    values.update({k: getattr(args, k) for k in (*FLAGS, *OPTION_FLAGS)
                   if getattr(args, k) is not None})
    return TrainConfig.from_dict(values)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.resume:
        if args.out is None:
            raise ValueError("--resume needs --out, the run directory to continue")
        given = [k for k in (*FLAGS, *OPTION_FLAGS)
                 if getattr(args, k) is not None and k != "epochs"]
        if "clusters" in given:
            raise ValueError("--resume continues a run with its saved settings; to cluster it "
                             "at another K without retraining, use python -m trainers.recluster "
                             f"--run {args.out} --clusters {args.clusters}")
        if given or args.config:
            raise ValueError("--resume continues a run with its saved settings; only --epochs "
                             f"may change (got {', '.join('--' + g for g in given) or '--config'})")
        config = None
    else:
        config = config_from_args(args)
        config.resolved()  # a bad setting is refused before a framework loads
    from mixem_tf.callbacks import NonFiniteLossError
    from mixem_tf.report import readout_report
    from mixem_tf.training import train_run

    out = args.out or Path("runs") / f"{config.dataset.replace(':', '_').replace('/', '_')}-{config.method}"
    try:
        result = train_run(config, out, resume=args.resume, overwrite=args.overwrite,
                           epochs=args.epochs if args.resume else None,
                           verbose=0 if args.quiet else 1, deterministic=args.deterministic,
                           readouts=args.readouts)
    except NonFiniteLossError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if result.k_choice is not None:
        from mixem_tf.report import format_table
        from trainers.recluster import choice_table

        print(choice_table(result.k_choice, format_table))
        print(f"chosen: K = {result.k_choice.k} by {result.k_choice.criterion}")
    print(readout_report(result.readouts, result.pixels))
    best = result.default_readout
    shown = {name: best.row["label_free"][name] for name in ("stability", "separation")
             if name in best.row.get("label_free", {})}
    shown.update({k.upper(): best.row[k] for k in ("acc", "nmi", "ari") if k in best.row})
    scores = "  ".join(f"{k} {v:.4f}" for k, v in shown.items())
    print(f"run: {result.out_dir}  default read-out {best.name}: {scores}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
