"""Our MIX'EM training step against the official PyTorch code's, alternating in one process
tree, and the ratio of their pairs/s.

    python -m bench.official_mixem --official /tmp/MIXEM --torch-python /tmp/torchvenv/bin/python \\
        --batch-sizes 64 128 --rounds 3 --steps 10 --warmup 3 --backend tensorflow jax \\
        --json bench/results/official_mixem.json

Nothing of the official code is copied here and PyTorch is no dependency of the project: the
official repository (github.com/alivaramesh/MIXEM) is imported from `--official` and runs under
`--torch-python`, a separate virtual environment:

    git clone https://github.com/alivaramesh/MIXEM /tmp/MIXEM
    python3.11 -m venv /tmp/torchvenv
    /tmp/torchvenv/bin/pip install torch==2.14.1 torchvision==0.29.1 pyyaml numpy pillow \\
        opencv-python-headless tensorboard scikit-learn tqdm

(train.py imports TensorBoard and, through linear.py, scikit-learn and tqdm; the SimCLR
Gaussian blur needs OpenCV.) Both are checked before any timing starts.

Per round and batch size, each side runs in its own subprocess, on the CPU (CUDA hidden from
both), the order flipped every round so that drift in the machine's load falls on both:
- ours: `bench.train_throughput --method mixem --cases resnet18:32:3`, once per `--backend`
  (the model, views, loss and optimiser as `train_run` builds them for CIFAR-10);
- official: this file's `worker` mode under `--torch-python`. It builds what `run.py` would
  for `CIFAR10_TrainTest` at the given batch from the official config.yaml (ResNet-18 with
  the 3x3 stride-1 conv1 and no max-pool that run.py switches on for CIFAR, 10 components,
  out_dim 32, w_entropy 2, w_push 0.05, w_pull 0.1, pimax_loss_w 0.1, temperature 0.5, Adam
  1e-4 with weight decay 1e-5): the official `MIXEM` object (its own `__init__`, which makes
  the `NTXentLoss` and the `DataSetWrapper`), `ResNet`, and the body of `MIXEM.train`'s
  step around `MIXEM.mixem_loss`. Random uint8 32x32x3 images enter as torchvision's
  CIFAR-10 gives them (a PIL image) through the official SimCLR transform and `DataLoader`
  (`--workers` processes), with `torch.set_num_threads(--threads)`. One difference: the
  TensorBoard writer is a no-op (the official step writes two histograms and five scalars
  per step); its training-loop prints are left out too.

Reported per run: pairs/s (batch / the median step time over `--steps` steps after
`--warmup` steps, a step timed end to end, data wait included), the first step's seconds (the
official one includes starting the DataLoader's workers), the peak RSS of the training process
(for the official side, without its DataLoader workers) and the parameter count; then per
(side, batch) the medians over rounds and ours/official of the median pairs/s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OFFICIAL = "pytorch"
OFFICIAL_FILES = ("train.py", "resnet.py", "nt_xent.py", "data_aug/dataset_wrapper.py",
                  "config.yaml")
OFFICIAL_DATASET = "CIFAR10_TrainTest"
CASE = {"method": "mixem", "backbone": "resnet18", "input": "32x32x3", "precision": "float32"}


# -- worker mode: runs under --torch-python; imports torch and the official code only ---------

class NoWriter:
    """Stands in for the official step's TensorBoard `SummaryWriter`: accepts any call, writes
    nothing."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


class RandomImages:
    """`count` random uint8 32x32x3 images, each given as torchvision's `CIFAR10.__getitem__`
    gives one: the official transform of a PIL image, and a label."""

    def __init__(self, count: int, transform, seed: int = 0):
        import numpy as np

        self.images = np.random.default_rng(seed).integers(0, 256, (count, 32, 32, 3),
                                                           dtype=np.uint8)
        self.transform = transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[index])), 0


def import_official(official: str):
    """The official `train` module, after torch (train.py imports torch, TensorBoard,
    scikit-learn through linear.py, and the official modules)."""
    import torch  # noqa: F401  (first, so that a venv without it says so)

    sys.path.insert(0, str(official))
    import train

    return train


def official_config(official: str, batch_size: int, workers: int, log_dir: str) -> dict:
    """The official config.yaml with what run.py sets for `OFFICIAL_DATASET` at this batch."""
    import yaml

    with open(Path(official) / "config.yaml") as handle:
        config = yaml.load(handle, Loader=yaml.FullLoader)
    config.update({"batch_size": batch_size, "log_dir": log_dir, "gpus": [], "dataroot": None,
                   "lineardataroot": None, "init_from": None})
    config["dataset"]["dataset"] = OFFICIAL_DATASET
    config["dataset"][OFFICIAL_DATASET]["num_workers"] = workers
    config["conv1_k3"] = config["conv1_k3"] or OFFICIAL_DATASET.startswith("CIFAR")  # run.py
    return config


def official_row(official: str, batch_size: int, steps: int, warmup: int, workers: int,
                 threads: int) -> dict:
    """The official code's training step timed as `bench.train_throughput` times ours."""
    import resource

    train = import_official(official)
    import torch
    from data_aug.dataset_wrapper import SimCLRDataTransform
    from resnet import ResNet

    torch.set_num_threads(threads)
    total = 1 + warmup + steps
    with tempfile.TemporaryDirectory() as log_dir:
        config = official_config(official, batch_size, workers, log_dir)
        mixem = train.MIXEM(config)
        mixem.writer.close()
    mixem.writer = NoWriter()
    wrapper = mixem.dataset  # as its get_data_loaders, on RandomImages instead of a download
    augment = wrapper._transform_pipeline(wrapper.input_shape[0], wrapper.s, wrapper.minscale,
                                          wrapper.maxscale, wrapper.normtrans)
    images = RandomImages(batch_size * total, SimCLRDataTransform(augment, wrapper.num_trans))
    wrapper.train_sampler = wrapper.valid_sampler = torch.utils.data.SubsetRandomSampler(
        range(len(images)))
    loader, _ = wrapper.get_train_validation_data_loaders(images)

    model = ResNet(**config["model"], conv1_k3=config["conv1_k3"]).to(mixem.device)
    optimizer = torch.optim.Adam(model.parameters(), float(config["learning_rate"]),
                                 weight_decay=float(config["weight_decay"]))
    model.train()
    step_s = []
    last = time.perf_counter()
    for n_iter, (xs, _) in enumerate(loader):  # MIXEM.train's step, its logging left out
        optimizer.zero_grad()
        xs = [view.to(mixem.device) for view in xs]
        loss = mixem.mixem_loss(model, xs, 1, n_iter, "Train")
        loss.backward()
        optimizer.step()
        now = time.perf_counter()
        step_s.append(now - last)
        last = now
    if not torch.isfinite(loss):
        raise RuntimeError(f"the official loss is {loss.item()}")
    return {"backend": OFFICIAL, **CASE, "batch": batch_size,
            "pairs_per_s": batch_size / statistics.median(step_s[1 + warmup:]),
            "first_step_s": step_s[0],
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "parameters": sum(p.numel() for p in model.parameters()),
            "torch": torch.__version__, "threads": threads, "workers": workers}


def worker_main(argv=None) -> int:
    """`worker`: one official row to --json; `check`: the official code imports."""
    parser = argparse.ArgumentParser(prog="official_mixem.py")
    parser.add_argument("mode", choices=("worker", "check"))
    parser.add_argument("--official", required=True)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="worker: write the row here")
    args = parser.parse_args(argv)
    if args.mode == "worker" and not args.json:
        parser.error("worker needs --json")
    if args.mode == "check":
        import_official(args.official)
        return 0
    row = official_row(args.official, args.batch_size, args.steps, args.warmup, args.workers,
                       args.threads)
    with open(args.json, "w") as handle:
        json.dump(row, handle)
    return 0


# -- main mode: the project's Python --------------------------------------------------------

def check_official(official: str) -> None:
    """ValueError unless `official` holds the MIX'EM repository's files this bench imports."""
    missing = [name for name in OFFICIAL_FILES if not (Path(official) / name).is_file()]
    if missing:
        raise ValueError(f"--official {official} is not the MIX'EM repository (no "
                         f"{', '.join(missing)}); git clone https://github.com/alivaramesh/MIXEM")


def check_torch_python(torch_python: str, official: str) -> None:
    """ValueError unless `torch_python` imports torch and the official code."""
    try:
        done = subprocess.run([torch_python, __file__, "check", "--official", official],
                              capture_output=True, text=True, timeout=300)
    except (FileNotFoundError, PermissionError):
        raise ValueError(f"--torch-python {torch_python} is not an executable") from None
    if done.returncode:
        lines = done.stderr.strip().splitlines() or [f"exit status {done.returncode}"]
        raise ValueError(f"--torch-python {torch_python} cannot import the official code "
                         f"({lines[-1]}); set its venv up as this bench's docstring says")


def _child_env(**settings) -> dict:
    return {**os.environ, "CUDA_VISIBLE_DEVICES": "", **settings}


def _run_json(command: list[str], out: Path, env: dict) -> dict:
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode:
        tail = done.stderr.strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
        raise RuntimeError(f"{' '.join(command[:3])} failed: {tail[0]}")
    return json.loads(out.read_text())


def ours_row(python: str, backend: str, batch_size: int, steps: int, warmup: int,
             out: Path) -> dict:
    """Our step's row from `bench.train_throughput` under `python` and KERAS_BACKEND=`backend`."""
    command = [python, "-m", "bench.train_throughput", "--method", "mixem",
               "--cases", "resnet18:32:3", "--batch-size", str(batch_size),
               "--steps", str(steps), "--warmup", str(warmup), "--json", str(out)]
    return _run_json(command, out, _child_env(KERAS_BACKEND=backend))["rows"][0]


def official_run(torch_python: str, official: str, batch_size: int, steps: int, warmup: int,
                 workers: int, threads: int, out: Path) -> dict:
    """The official step's row from this file's worker mode under `torch_python`."""
    command = [torch_python, __file__, "worker", "--official", official,
               "--batch-size", str(batch_size), "--steps", str(steps), "--warmup", str(warmup),
               "--workers", str(workers), "--threads", str(threads), "--json", str(out)]
    return _run_json(command, out, _child_env())


def summary_rows(rows: list[dict]) -> list[dict]:
    """Per (side, batch): medians over rounds, the pairs/s range, and ours/official of the
    median pairs/s (None where that batch has no official row)."""
    groups = defaultdict(list)
    for row in rows:
        groups[row["backend"], row["batch"]].append(row)
    medians = {key: statistics.median(r["pairs_per_s"] for r in group)
               for key, group in groups.items()}
    summary = []
    for (backend, batch), group in sorted(groups.items(), key=lambda item: item[0][::-1]):
        pairs = [r["pairs_per_s"] for r in group]
        official = medians.get((OFFICIAL, batch))
        summary.append({
            "backend": backend, "batch": batch, "rounds": len(group),
            "pairs_per_s": medians[backend, batch], "pairs_per_s_min": min(pairs),
            "pairs_per_s_max": max(pairs),
            "first_step_s": statistics.median(r["first_step_s"] for r in group),
            "peak_rss_mib": statistics.median(r["peak_rss_mib"] for r in group),
            "parameters": group[0].get("parameters"),
            "ours_over_official": (None if backend == OFFICIAL or official is None
                                   else medians[backend, batch] / official)})
    return summary


def _shown(row: dict) -> dict:
    """`row` for the printed table: one decimal, the ratio with two, no Nones."""
    digits = {"ours_over_official": 2}
    return {k: (f"{v:.{digits.get(k, 1)}f}" if isinstance(v, float) else "-" if v is None
                else v) for k, v in row.items()}


def main(argv=None) -> int:
    from mixem_tf.report import format_table

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", required=True, help="the official MIX'EM repository")
    parser.add_argument("--torch-python", required=True,
                        help="the Python of a venv with PyTorch (see above)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--warmup", type=int, default=3,
                        help="steps after the first one that are not timed")
    parser.add_argument("--backend", nargs="+", default=["tensorflow"],
                        choices=("tensorflow", "jax"), help="our side's KERAS_BACKEND")
    parser.add_argument("--jax-python", default=sys.executable,
                        help="the Python that runs our side under JAX (default: this one)")
    parser.add_argument("--workers", type=int, default=2, help="the official DataLoader's")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--json", default=None, help="write every row and the summary here")
    args = parser.parse_args(argv)
    if (args.steps < 1 or args.warmup < 0 or args.rounds < 1 or args.workers < 1
            or args.threads < 1 or min(args.batch_sizes) < 2):
        parser.error("--steps, --rounds, --workers and --threads must be >= 1, --warmup >= 0 "
                     "and every batch size >= 2")
    args.official = os.path.abspath(args.official)  # the children run in the repository
    args.torch_python = os.path.abspath(args.torch_python)  # (not resolved: a venv's link)
    check_official(args.official)
    check_torch_python(args.torch_python, args.official)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "row.json"
        for round_ in range(1, args.rounds + 1):
            for batch in args.batch_sizes:
                sides = [*args.backend, OFFICIAL]
                for side in sides if round_ % 2 else sides[::-1]:
                    if side == OFFICIAL:
                        row = official_run(args.torch_python, args.official, batch, args.steps,
                                           args.warmup, args.workers, args.threads, out)
                    else:
                        python = args.jax_python if side == "jax" else sys.executable
                        row = ours_row(python, side, batch, args.steps, args.warmup, out)
                    rows.append({"round": round_, **row})
                    print(f"round {round_} batch {batch} {side}: {row['pairs_per_s']:.1f} "
                          f"pairs/s, first step {row['first_step_s']:.1f} s", flush=True)
    columns = ["round", "backend", "batch", "pairs_per_s", "first_step_s", "peak_rss_mib",
               "parameters"]
    summary = summary_rows(rows)
    print(format_table([_shown(row) for row in rows], columns))
    print()
    print(format_table([_shown(row) for row in summary]))
    if args.json:
        settings = {k: v for k, v in vars(args).items() if k != "json"}
        with open(args.json, "w") as handle:
            json.dump({"settings": settings, "rows": rows, "summary": summary}, handle,
                      indent=1)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] in (["worker"], ["check"]):
        sys.exit(worker_main())
    from mixem_tf.cli import run

    sys.exit(run(main))
