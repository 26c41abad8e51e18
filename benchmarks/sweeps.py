"""Sweeps: a 16-trial sweep with ASHA vs FIFO on the same search space, side by side.

Both sweeps run the same 16 configurations (a grid over the learning rate, so the trials are identical,
not merely drawn from one distribution) of the digits CNN with single-worker trials, in one Ray
instance, alternating over `--repeats`. Reported: sweep wall time, best validation accuracy, and the
ratio ASHA / FIFO of wall time [target <= 0.5 at equal best accuracy]. The per-trial start-up overhead
before and after raykit's small-trial optimisation (inline trials) is its own section, written by
benchmarks/sweep_overhead.py.

    .venv/bin/python benchmarks/sweeps.py [--trials 16] [--epochs 12] [--repeats 2] [--results FILE]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import ray  # noqa: E402

import raykit  # noqa: E402
from benchmarks.common import RESULTS, machine_line, spread, start_ray, write_section  # noqa: E402

SECTION = "## Sweeps: ASHA vs FIFO"


def one_sweep(scheduler: str, trials: int, epochs: int, storage: str, name: str) -> dict:
    rates = [float(r) for r in np.geomspace(1e-4, 3e-2, trials)]
    started = time.perf_counter()
    result = raykit.tune(None, {"optim.lr": {"grid": rates}},
                         [f"storage={storage}", f"name={name}", "scaling.num_workers=1", f"train.epochs={epochs}",
                          f"tune.scheduler={scheduler}", "tune.grace_period=1", "tune.reduction_factor=3",
                          "train.batch_size=32", "model.filters=[64, 128, 256]"], verbose=False)
    return {"wall": time.perf_counter() - started, "best": max(t.best_metric or 0.0 for t in result.trials),
            "epochs": sum(t.epochs for t in result.trials)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--results", type=Path, default=RESULTS, help="Markdown file to update")
    args = parser.parse_args()
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")
    start_ray(2)
    storage = tempfile.mkdtemp(prefix="raykit-bench-sweeps-")
    runs: dict = {"asha": [], "fifo": []}
    for repeat in range(args.repeats):  # alternate, so drift on a shared machine hits both
        for scheduler in ("asha", "fifo"):
            runs[scheduler].append(one_sweep(scheduler, args.trials, args.epochs, storage, f"{scheduler}-{repeat}"))
    ray.shutdown()
    table = render(runs, args)
    print(table)
    write_section(SECTION, table, args.results)


def render(runs: dict, args) -> str:
    ratio = [a["wall"] / f["wall"] for a, f in zip(runs["asha"], runs["fifo"])]
    gap = [a["best"] - f["best"] for a, f in zip(runs["asha"], runs["fifo"])]
    met = "met" if max(ratio) <= 0.5 and min(gap) >= -0.01 else "not met"
    lines = [SECTION, "", machine_line() + f" {args.trials} trials of the digits CNN (grid over optim.lr from 1e-4 to "
             f"3e-2; filters 64/128/256 so that an epoch outweighs a trial's start), 1 worker each, inline, up to "
             f"{args.epochs} epochs, batch 32; ASHA with grace period 1 and reduction factor 3; {args.repeats} repeats alternating the schedulers in one Ray instance (2 CPUs: 2 "
             "trials at a time).", "",
             "| scheduler | sweep wall time, s | trial-epochs run | best val accuracy |", "|---|---|---|---|"]
    for name in ("asha", "fifo"):
        values = runs[name]
        lines.append(f"| {name.upper()} | {spread([v['wall'] for v in values])} | "
                     f"{spread([v['epochs'] for v in values], 0)} | {spread([v['best'] for v in values], 4)} |")
    lines += ["", f"Wall-time ratio ASHA / FIFO: {spread(ratio, 2)} (target <= 0.5 at equal best accuracy: {met}; "
              f"best-accuracy difference ASHA - FIFO {spread(gap, 4)}). Per-trial start-up overhead: see "
              "\"Sweep trial overhead\".", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
