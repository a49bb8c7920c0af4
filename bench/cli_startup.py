"""How long each entry point takes to answer `--help` and a bad argument (a fresh process each).

    python -m bench.cli_startup [--repeats 5] [--modules trainers.fit export.onnx]

Neither needs a framework: the goal is under 1.5 s each. Prints a table of the median,
fastest and slowest wall-clock seconds per case, and the median CPU seconds (user + system) of
the process, which a machine shared with other jobs inflates far less than wall time; the exit
code of every run is checked (0 for --help, 2 for the bad argument).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time

from mixem_tf.report import format_table

#: Entry point → arguments it refuses (a setting or a flag), for the bench and its test.
BAD_ARGUMENTS = {
    "trainers.fit": ["--dataset", "no_such_dataset"],
    "trainers.tune": ["--out", "study", "--epochs", "ten"],
    "trainers.predict": ["--images", "photos"],
    "trainers.pixel_kmeans": ["--features", "all"],
    "trainers.recluster": ["--run", "r", "--clusters", "1"],
    "trainers.review": ["--run", "r"],
    "export.savedmodel": ["--no-such-flag"],
    "export.onnx": ["--saved-model", "m"],
    "export.keras_model": ["--run", "r"],
    "serving.server": ["--model_base_path=m", "--port=-1"],
    "serving.client": ["a.png", "--no-such-flag"],
}


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_command(module: str, args: list[str], expected_code: int) -> tuple[float, float]:
    """(wall-clock, CPU) seconds of `python -m module args`; RuntimeError on another exit
    code."""
    start, cpu = time.perf_counter(), _children_cpu_s()
    done = subprocess.run([sys.executable, "-m", module, *args], capture_output=True,
                          text=True, timeout=300)
    seconds = time.perf_counter() - start, _children_cpu_s() - cpu
    if done.returncode != expected_code:
        raise RuntimeError(f"python -m {module} {' '.join(args)} exited {done.returncode}, "
                           f"not {expected_code}: {done.stderr.strip()[-300:]}")
    return seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cli_startup", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="runs per case (default 5)")
    parser.add_argument("--modules", nargs="+", default=list(BAD_ARGUMENTS),
                        choices=list(BAD_ARGUMENTS))
    args = parser.parse_args(argv)
    rows = []
    for module in args.modules:
        for case, arguments, code in (("--help", ["--help"], 0),
                                      ("bad argument", BAD_ARGUMENTS[module], 2)):
            runs = [time_command(module, arguments, code) for _ in range(args.repeats)]
            times = [wall for wall, _ in runs]
            rows.append({"entry point": module, "case": case,
                         "median s": f"{statistics.median(times):.2f}",
                         "min s": f"{min(times):.2f}", "max s": f"{max(times):.2f}",
                         "CPU s": f"{statistics.median(cpu for _, cpu in runs):.2f}"})
            print(f"{module} {case}: {statistics.median(times):.2f} s", file=sys.stderr)
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
