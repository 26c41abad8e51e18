"""Per-trial start-up overhead of a sweep: single-worker trials run inline in the Tune trial process
(raykit's default) vs the same trials each launching a Ray Train worker group.

Both sweeps run side by side in one Ray instance, alternating, `--repeats` times: 4 trials of the digits
CNN, one at a time (so wall time is the sum of the trials), 3 epochs each. Overhead per trial =
(sweep wall time - time spent in training epochs) / trials. Writes a Markdown table to
benchmarks/RESULTS.md (section "Sweep trial overhead") and prints it.

    .venv/bin/python benchmarks/sweep_overhead.py [--repeats 3] [--trials 4] [--epochs 3] [--results FILE]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ray  # noqa: E402

import raykit  # noqa: E402
from benchmarks.common import RESULTS, start_ray, write_section  # noqa: E402

SECTION = "## Sweep trial overhead"


def one_sweep(inline: bool, trials: int, epochs: int, storage: str, index: int) -> float:
    started = time.perf_counter()
    result = raykit.tune(None, {"optim.lr": {"grid": [1e-3 * (1 + i) for i in range(trials)]}},
                         [f"storage={storage}", f"name={'inline' if inline else 'train'}-{index}",
                          "scaling.num_workers=1", f"train.epochs={epochs}", "tune.max_concurrent_trials=1",
                          f"tune.inline_single_worker={str(inline).lower()}"], verbose=False)
    wall = time.perf_counter() - started
    training = sum(row.get("epoch_time_s", 0.0) for trial in result.trials for row in trial.history)
    return (wall - training) / len(result.trials)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--results", type=Path, default=RESULTS, help="Markdown file to update")
    args = parser.parse_args()
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")
    start_ray(2)
    storage = tempfile.mkdtemp(prefix="raykit-bench-")
    overhead = {True: [], False: []}
    for index in range(args.repeats):
        for inline in (True, False):  # alternate, so drift on a shared machine hits both
            overhead[inline].append(one_sweep(inline, args.trials, args.epochs, storage, index))
    ray.shutdown()
    table = render(overhead, args)
    print(table)
    write_section(SECTION, table, args.results)


def render(overhead: dict, args) -> str:
    def cell(values):
        return f"{statistics.median(values):.1f} s (min {min(values):.1f}, max {max(values):.1f})"

    ratio = [a / b for a, b in zip(overhead[True], overhead[False])]
    import torch

    lines = [SECTION, "",
             f"Machine: {os.cpu_count()} cores, {platform.machine()}, no GPU used; Python "
             f"{platform.python_version()}, Ray {ray.__version__}, torch {torch.__version__}. "
             f"{args.trials} single-worker trials of the digits CNN, {args.epochs} epochs each, one trial at a time, "
             f"{args.repeats} repeats alternating the two modes in one Ray instance. Overhead per trial = "
             "(sweep wall time - time in training epochs) / trials.", "",
             "| trial mode | overhead per trial, median (min, max) |", "|---|---|",
             f"| inline in the trial process (`tune.inline_single_worker: true`, default) | {cell(overhead[True])} |",
             f"| a Ray Train worker group per trial (`false`) | {cell(overhead[False])} |",
             f"| ratio inline / Train | {statistics.median(ratio):.2f} (min {min(ratio):.2f}, max {max(ratio):.2f}) |",
             ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
