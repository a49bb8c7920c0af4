"""How long a large cluster lasts in runs that recover: is the collapse warning's wait enough?

    python -m trainers.fit --dataset digits --method mixem --out runs/digits-mixem
    python -m bench.collapse_wait runs/digits-mixem runs/digits-cdec ...

Reads each run's `occupancy.jsonl` (the share of every cluster of the method's own assignment,
per epoch) and reports the epochs in which one cluster held more than `--alarm` of the images,
the longest such streak that ended before the run did (a recovery), and whether the run ended
over the alarm (a collapse). A warning that waits `patience` epochs stays silent on every
recovered run when patience exceeds the longest recovered streak.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mixem_tf.report import format_table
from mixem_tf.runs import OCCUPANCY_FILE


def streaks(over: list[bool]) -> list[tuple[int, int]]:
    """(first epoch, length) of each run of True, epochs counted from 1."""
    found, start = [], None
    for epoch, flag in enumerate([*over, False], start=1):
        if flag and start is None:
            start = epoch
        elif not flag and start is not None:
            found.append((start, epoch - start))
            start = None
    return found


def run_row(run_dir: Path, alarm: float) -> dict:
    """One run's over-alarm epochs, its longest recovered streak and how it ended."""
    path = run_dir / OCCUPANCY_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} has no {OCCUPANCY_FILE}")
    shares = [max(json.loads(line)["occupancy"]) for line in path.read_text().splitlines()
              if line.strip()]
    over = [share > alarm for share in shares]
    found = streaks(over)
    recovered = [length for start, length in found if start + length - 1 < len(shares)]
    return {"run": run_dir.name, "epochs": len(shares),
            "over-alarm epochs": ",".join(str(e) for e, flag in enumerate(over, 1) if flag) or "-",
            "longest recovered streak": max(recovered, default=0),
            "largest share first/last": f"{shares[0]:.2f}/{shares[-1]:.2f}",
            "ended collapsed": "yes" if over[-1] else "no"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.collapse_wait", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="run directories")
    parser.add_argument("--alarm", type=float, default=0.5,
                        help="the share of one cluster that counts as large (default 0.5)")
    args = parser.parse_args(argv)
    rows = [run_row(run, args.alarm) for run in args.runs]
    print(format_table(rows))
    needed = max(row["longest recovered streak"] for row in rows) + 1
    print(f"a wait of {needed} epoch(s) stays silent on every recovered run", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
