"""Large image folders: load times with and without the decoded cache, peak memory of the
commands, and the feed's rate, against another checkout of mixem-tf (e.g. the code before the
cache) on the sizes that code can hold.

    python -m bench.large_folders --work /tmp/large --sizes 10000 --pixels 96 32 \\
        --baseline /path/to/older/checkout [--commands] [--feed] [--simulate-million]

For each size N and pixel size P it generates N JPEGs of P × P (smooth random patterns, once,
under WORK) and measures, each command in its own process (wall time, peak RSS from wait4):

(peak RSS is the process's VmHWM; decoding processes are not included)

* first load: `load_folder` with an empty cache (decoding every file into the cache);
* second load: `load_folder` again (the cache is mapped; files are only listed and stat'ed),
  the fastest of ``--repeats``;
* baseline load: `load_folder` of the baseline checkout (it decodes every time);
* with ``--commands`` (first size, last pixel size): `trainers.fit` for one epoch (ConvNet of
  width 8, K = 10), then `export.savedmodel` and `trainers.predict` of that run, with this
  code and the baseline's;
* with ``--feed`` (first size, first pixel size): images/s of the training feed (batch 256)
  as each backend's training reads it: under JAX the Python iterator (the baseline's
  `EpochBatches` over an in-memory array against this code's over the cache's memory map),
  under TensorFlow a `tf.data` stream read in the graph (the baseline's generator
  through `from_generator` against `EpochBatches.tf_dataset`); each feed in a fresh process,
  rounds alternate, the median is reported.

``--simulate-million`` adds 1,000,000 images at 32 px without decoding a million files: the
folder is 1,000,000 hard links to the 10,000 JPEGs of 32 px, and its cache entry is written
directly (the index
of the million files, the images tiled from a decoded 10,000-image folder), so what is
measured is the path every command takes after the first: the second load, and
``--million-steps`` batches of 1024 of the training feed (peak RSS of the process);
``--million-commands`` adds `trainers.fit` for one epoch and `export.savedmodel` on it.
(`trainers.predict` streams files in batches, so its memory does not grow with a folder:
``--commands`` measures it at the sizes given.)

Results print as a Markdown table (docs/BENCHMARKS.md, "Large folders").
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MIB = 2**20
FEED_BATCH = 256
FEED_ROUNDS = 3
FEED_TIMEOUT = 600  # seconds for one feed process
MILLION = 1_000_000


def _write_jpegs(args) -> None:
    folder, start, stop, pixels = args
    from PIL import Image

    rng = np.random.default_rng(start)
    yy, xx = np.mgrid[0:pixels, 0:pixels] / pixels
    for i in range(start, stop):
        a, b, c = rng.uniform(2, 12, 3)
        waves = np.stack([np.sin(a * xx + c), np.cos(b * yy), np.sin(a * xx + b * yy)], -1)
        pixels_u8 = np.clip(waves * 90 + 128 + rng.normal(0, 12, waves.shape), 0, 255)
        Image.fromarray(pixels_u8.astype(np.uint8)).save(folder / f"{i:07d}.jpg", quality=90)


def make_folder(work: Path, count: int, pixels: int) -> Path:
    """WORK/jpeg-N-P: N JPEGs of P × P (written once)."""
    folder = work / f"jpeg-{count}-{pixels}"
    done = folder / ".complete"
    if done.exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    step = 2000
    with ProcessPoolExecutor(os.cpu_count() or 1) as pool:
        list(pool.map(_write_jpegs, [(folder, i, min(i + step, count), pixels)
                                     for i in range(0, count, step)]))
    done.write_text("")
    return folder


# Runs a module (-m NAME ARGS) or a script (-c CODE ARGS) and writes the process's own peak
# RSS (VmHWM: unlike ru_maxrss, it does not count the parent's memory before exec) at exit.
_MEASURED = """
import atexit, os, runpy, sys
def report():
    with open("/proc/self/status") as status, open(os.environ["BENCH_HWM"], "w") as out:
        out.write(next(line for line in status if line.startswith("VmHWM")).split()[1])
atexit.register(report)
kind, target, *sys.argv[1:] = sys.argv[1:]
if kind == "-m":
    sys.argv[0] = target
    runpy.run_module(target, run_name="__main__", alter_sys=True)
else:
    sys.argv[0] = "-c"
    exec(compile(target, "<bench>", "exec"), {"__name__": "__main__"})
"""


def run_measured(command, *, code_root: Path, cache: Path, cwd: Path,
                 timeout: float | None = None) -> dict:
    """Runs `command` (python -m NAME ... or python -c CODE ...) with `code_root` first on
    PYTHONPATH; wall seconds, its peak RSS (MiB) and its last stdout line parsed as JSON when
    it is JSON."""
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryFile("w+") as out, \
            tempfile.TemporaryFile("w+") as err:
        hwm = Path(tmp) / "hwm"
        env = {**os.environ, "PYTHONPATH": str(code_root), "MIXEM_TF_CACHE": str(cache),
               "TF_CPP_MIN_LOG_LEVEL": "3", "OMP_WAIT_POLICY": "PASSIVE", "BENCH_HWM": str(hwm)}
        start = time.perf_counter()
        process = subprocess.run([command[0], "-c", _MEASURED, *command[1:]], env=env, cwd=cwd,
                                 stdout=out, stderr=err, timeout=timeout)
        seconds = time.perf_counter() - start
        out.seek(0), err.seek(0)
        stdout, stderr = out.read(), err.read()
        peak = int(hwm.read_text()) / 1024 if hwm.exists() else float("nan")
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, command))} exited {process.returncode}:\n"
                           f"{stderr[-3000:]}")
    result = {"seconds": seconds, "peak_rss_mib": peak}
    lines = stdout.strip().splitlines()
    if lines:
        try:
            result.update(json.loads(lines[-1]))
        except ValueError:
            pass
    return result


_LOAD = """
import json, sys, time, warnings
import numpy as np
import PIL.Image  # imports are the process's start, not the load
from mixem_tf.data import load_folder
warnings.simplefilter("ignore")
start = time.perf_counter()
ds = load_folder(sys.argv[1], image_size=int(sys.argv[2]))
seconds = time.perf_counter() - start
checksum = int(np.asarray(ds.images[:100], np.int64).sum())
print(json.dumps({"load_seconds": seconds, "images": len(ds), "checksum": checksum}))
"""

_FEED = """
import json, sys, time, warnings
warnings.simplefilter("ignore")
from mixem_tf.data import load_folder
from mixem_tf.feeding import EpochBatches
start = time.perf_counter()
ds = load_folder(sys.argv[1], image_size=int(sys.argv[2]), progress=False)
opened = time.perf_counter() - start
feeder = EpochBatches(ds.images, 1024, seed=0, end_epoch=1)
start, seen = time.perf_counter(), 0
for (batch,) in feeder.tf_dataset().take(int(sys.argv[3])):
    seen += int(batch.shape[0])
print(json.dumps({"load_seconds": opened, "epoch_images": seen,
                  "feed_images_per_s": seen / (time.perf_counter() - start)}))
"""


# The training feed as one backend's training reads it (argv: backend, folder, pixels, steps,
# batch): under JAX the `EpochBatches` iterator; under TensorFlow a `tf.data` stream read inside
# the graph (`Dataset.reduce`), as Keras' `fit` reads it (`EpochBatches.tf_dataset`, or for code that has
# none, its iterator through `from_generator`). Images come as that code's `load_folder` gives
# them (the code before the cache: an in-memory array).
_FEED_RATE = """
import json, sys, time, warnings
warnings.simplefilter("ignore")
from mixem_tf.data import load_folder
from mixem_tf.feeding import EpochBatches
backend, folder, (pixels, steps, batch) = sys.argv[1], sys.argv[2], map(int, sys.argv[3:6])
images = load_folder(folder, image_size=pixels).images


def new_feeder():
    return EpochBatches(images, batch, end_epoch=2 + steps * batch // len(images))


if backend == "jax":
    start, seen = time.perf_counter(), 0
    for step, images_of_batch in enumerate(new_feeder(), 1):
        seen += len(images_of_batch)
        if step == steps:
            break
else:
    import tensorflow as tf

    def stream():
        feeder = new_feeder()
        if hasattr(feeder, "tf_dataset"):
            return feeder.tf_dataset()
        spec = tf.TensorSpec((None, *images.shape[1:]), tf.uint8)
        return tf.data.Dataset.from_generator(lambda: ((b,) for b in feeder),
                                              output_signature=(spec,))

    def read(dataset):  # one graph-level loop over the stream (`reduce`), as `fit` reads it
        return dataset.reduce(tf.constant(0, tf.int64), lambda seen, element:
                              seen + tf.shape(element[0], out_type=tf.int64)[0])

    read(stream().take(2))  # the first pass builds tf.data's threads: outside the timing
    start = time.perf_counter()
    seen = int(read(stream().take(steps)))
print(json.dumps({"images_per_s": seen / (time.perf_counter() - start)}))
"""


def load_times(folder: Path, pixels: int, baseline: Path | None, cache: Path,
               repeats: int) -> dict:
    """First load into an emptied cache, the fastest of `repeats` second loads, and the
    baseline's load."""
    python = [sys.executable, "-c", _LOAD, str(folder), str(pixels)]
    shutil.rmtree(cache, ignore_errors=True)
    first = run_measured(python, code_root=ROOT, cache=cache, cwd=ROOT)
    second = min((run_measured(python, code_root=ROOT, cache=cache, cwd=ROOT)
                  for _ in range(repeats)), key=lambda r: r["load_seconds"])
    rows = {"first load (decode into cache)": first,
            f"second load (cache, fastest of {repeats})": second}
    if baseline is not None:
        rows["baseline load (decode)"] = run_measured(python, code_root=baseline, cache=cache,
                                                      cwd=baseline)
    return rows


def command_memory(folder: Path, pixels: int, code: Path, cache: Path, out: Path,
                   predict: bool = True) -> dict:
    """trainers.fit (one epoch), export.savedmodel and (with `predict`) trainers.predict
    under `code`."""
    py = sys.executable
    run = out / "run"
    fit = [py, "-m", "trainers.fit", "--dataset", f"folder:{folder}", "--image-size",
           str(pixels), "--backbone", "convnet", "--backbone-width", "8", "--clusters", "10",
           "--epochs", "1", "--batch-size", "256", "--readout-settings", "sklearn", "--quiet",
           "--out", str(run), "--overwrite"]
    rows = {"trainers.fit, 1 epoch": run_measured(fit, code_root=code, cache=cache, cwd=code)}
    export = [py, "-m", "export.savedmodel", "--run", str(run), "--base-dir",
              str(out / "models"), "--model-name", "m"]
    rows["export.savedmodel"] = run_measured(export, code_root=code, cache=cache, cwd=code)
    if not predict:
        return rows
    predict = [py, "-m", "trainers.predict", "--model", str(out / "models" / "m"), "--images",
               str(folder), "--out", str(out / "clusters.csv"), "--batch-size", "256"]
    rows["trainers.predict"] = run_measured(predict, code_root=code, cache=cache, cwd=code)
    return rows


def feed_rates(folder: Path, pixels: int, baseline: Path, steps: int, cache: Path) -> dict:
    """Median images/s over alternating rounds of the training feed as each backend's training
    reads it, this code against the baseline's, each run in a fresh process (a feed's
    left-over threads slow the next one down in a shared process)."""
    codes = {"baseline": baseline, "this": ROOT}
    rates = {(backend, code): [] for backend in ("jax", "tensorflow") for code in codes}
    for _ in range(FEED_ROUNDS):
        for backend, code in rates:
            command = [sys.executable, "-c", _FEED_RATE, backend, str(folder), str(pixels),
                       str(steps), str(FEED_BATCH)]
            measured = run_measured(command, code_root=codes[code], cache=cache,
                                    cwd=codes[code], timeout=FEED_TIMEOUT)
            rates[(backend, code)].append(measured["images_per_s"])
            print(f"feed under {backend}, {code}: {measured['images_per_s']:.0f} images/s",
                  flush=True)
    return {key: statistics.median(values) for key, values in rates.items()}


def simulate_million(work: Path, source: Path, cache: Path) -> Path:
    """WORK/links-1M: a million hard links, 100 to each JPEG of `source` (10,000 files;
    file systems cap an inode's links), and its cache entry at 32 px written directly: the
    index of the million files, the images tiled from `source`'s entry."""
    from mixem_tf.data import load_folder
    from mixem_tf.data.cache import CacheEntry, join_paths

    folder = work / "links-1M"
    sources = sorted(source.glob("*.jpg"))
    names = [f"{i:07d}.jpg" for i in range(MILLION)]
    if not (folder / ".complete").exists():
        folder.mkdir(parents=True, exist_ok=True)
        for i, name in enumerate(names):
            if not (folder / name).exists():
                os.link(sources[i % len(sources)], folder / name)
        (folder / ".complete").write_text("")
    os.environ["MIXEM_TF_CACHE"] = str(cache)
    tiles = load_folder(source, image_size=32, progress=False).images
    stats = [os.stat(p) for p in sources]
    entry = CacheEntry({"source": "folder", "root": str(folder.resolve()), "size": [32, 32],
                        "channels": 3, "crop": "stretch"}, label=f"{folder.name}-32x32x3")
    if entry.read_index() is None:
        with entry.locked():
            path, images = entry.new_images((MILLION, 32, 32, 3))
            for start in range(0, MILLION, len(tiles)):
                stop = min(start + len(tiles), MILLION)
                images[start:stop] = tiles[:stop - start]
            images.flush()
            del images
            which = np.arange(MILLION) % len(sources)
            entry.commit(path, (MILLION, 32, 32, 3), {
                "paths": join_paths(names),
                "sizes": np.array([st.st_size for st in stats], np.int64)[which],
                "mtimes": np.array([st.st_mtime_ns for st in stats], np.int64)[which],
                "rows": np.arange(MILLION, dtype=np.int64), "reasons": join_paths([])},
                {"source": f"folder:{folder}"})
    return folder


def _table(rows) -> str:
    lines = ["| images | px | what | code | wall s | load s | peak RSS MiB |",
             "| ---: | ---: | --- | --- | ---: | ---: | ---: |"]
    for (count, pixels, what, code), r in rows:
        load = f"{r['load_seconds']:.3f}" if "load_seconds" in r else ""
        lines.append(f"| {count} | {pixels} | {what} | {code} | {r['seconds']:.1f} | {load} | "
                     f"{r['peak_rss_mib']:.0f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.large_folders", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="folders, caches and runs")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10000])
    parser.add_argument("--pixels", type=int, nargs="+", default=[96, 32])
    parser.add_argument("--baseline", type=Path, default=None,
                        help="another checkout of mixem-tf to compare with")
    parser.add_argument("--commands", action="store_true",
                        help="also fit / export / predict (peak RSS): first size, last pixels")
    parser.add_argument("--feed", action="store_true",
                        help="feed rate (needs --baseline): first size, first pixels")
    parser.add_argument("--feed-steps", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=3, help="second loads (the fastest)")
    parser.add_argument("--simulate-million", action="store_true")
    parser.add_argument("--million-steps", type=int, default=977,
                        help="feed batches of 1024 read from the million (977: one epoch)")
    parser.add_argument("--million-commands", action="store_true",
                        help="also trainers.fit (one epoch) and export.savedmodel on the million")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    print(f"uptime: {os.popen('uptime').read().strip()}", flush=True)
    rows = []
    for count in args.sizes:
        for pixels in args.pixels:
            folder = make_folder(args.work, count, pixels)
            cache = args.work / f"cache-{count}-{pixels}"
            for what, r in load_times(folder, pixels, args.baseline, cache,
                                      args.repeats).items():
                rows.append(((count, pixels, what, "this"
                              if not what.startswith("baseline") else "baseline"), r))
                print(rows[-1], flush=True)
            first = count == args.sizes[0]
            if args.commands and first and pixels == args.pixels[-1]:
                codes = [("this", ROOT)] + ([("baseline", args.baseline)]
                                            if args.baseline else [])
                for name, code in codes:
                    out = args.work / f"runs-{count}-{pixels}-{name}"
                    out.mkdir(exist_ok=True)
                    try:
                        measured = command_memory(folder, pixels, code, cache, out)
                    except RuntimeError as error:  # reported; the other measurements go on
                        print(f"{name}: {error}", flush=True)
                        continue
                    for what, r in measured.items():
                        rows.append(((count, pixels, what, name), r))
                        print(rows[-1], flush=True)
            if args.feed and args.baseline and first and pixels == args.pixels[0]:
                rates = feed_rates(folder, pixels, args.baseline, args.feed_steps, cache)
                for backend in ("jax", "tensorflow"):
                    old, new = rates[(backend, "baseline")], rates[(backend, "this")]
                    print(f"feed {count} x {pixels} px under {backend}, images/s (median of "
                          f"{FEED_ROUNDS}): baseline {old:.0f}, this {new:.0f} "
                          f"({new / old:.2f}x)", flush=True)
    if args.simulate_million:
        source = make_folder(args.work, 10000, 32)
        cache = args.work / "cache-1M"
        folder = simulate_million(args.work, source, cache)
        feed = [sys.executable, "-c", _FEED, str(folder), "32", str(args.million_steps)]
        r = run_measured(feed, code_root=ROOT, cache=cache, cwd=ROOT)
        what = f"load + {args.million_steps} feed batches of 1024"
        rows.append(((MILLION, 32, what, "this"), r))
        print(rows[-1], flush=True)
        if args.million_commands:
            out = args.work / "runs-1M-32-this"
            out.mkdir(exist_ok=True)
            for what, r in command_memory(folder, 32, ROOT, cache, out, predict=False).items():
                rows.append(((MILLION, 32, what, "this"), r))
                print(rows[-1], flush=True)
    print(_table(rows))
    print(f"uptime: {os.popen('uptime').read().strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
