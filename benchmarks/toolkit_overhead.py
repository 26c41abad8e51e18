"""Toolkit overhead: the default digits CNN job through raykit vs the same training in a hand-written
minimal Ray Train script (benchmarks/baselines/ray_train_minimal.py).

Both sides train the same CNN (same parameter count) on the same digits split with 2 workers, Adam
lr 1e-3, global batch 64 (32 per worker), `--epochs` epochs, a checkpoint every epoch; they run
alternating in one Ray instance (2 CPUs), `--repeats` times. Reported, raykit / hand-written:
- wall time of one run, as the caller waits for it (target <= 1.05);
- steady-state samples/s per worker: median over epochs 2+ of training samples per worker / epoch time
  (training + validation) (target >= 0.95);
- the wall time again with 1 worker on both sides, raykit taking its inline path (the run in the calling
  process, no Train worker group: ``scaling.inline``; on, because this script's own Ray would otherwise
  make ``auto`` join it) (target <= 0.7).
raykit's wall time is split into the phases raykit records in `result.json` ("timings": spec and data plan,
Ray connect, controller and worker start, worker set-up, data, model, epochs, rank 0's test evaluation,
Train shut-down, outputs).

    .venv/bin/python benchmarks/toolkit_overhead.py [--repeats 5] [--epochs 10] [--results FILE]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# Each report() waits for the controller's poll; raykit sets this short interval itself, the baseline
# gets it here so both sides run under the same setting.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")

import ray  # noqa: E402

import raykit  # noqa: E402
from raykit.timing import PHASES  # noqa: E402
from benchmarks.baselines.ray_train_minimal import digits_cnn, train_digits_cnn  # noqa: E402
from benchmarks.common import (RESULTS, digits_train_size, machine_line, spread, start_ray,  # noqa: E402
                               steady_samples_per_worker, write_section)

SECTION = "## Toolkit overhead"
WORKERS = 2
TARGETS = {"wall": ("<=", 1.05), "rate": (">=", 0.95), "wall_1": ("<=", 0.7)}


def raykit_run(epochs: int, storage: str, name: str, workers: int = WORKERS) -> dict:
    started = time.perf_counter()
    overrides = {"train.epochs": epochs, "train.batch_size": 32 * workers, "scaling.num_workers": workers,
                 "storage": storage, "name": name}
    if workers == 1:
        overrides["scaling.inline"] = "on"
    result = raykit.train(None, overrides, verbose=False)
    return {"wall": time.perf_counter() - started, "history": result.history, "timings": result.timings}


def baseline_run(epochs: int, storage: str, name: str, workers: int = WORKERS) -> dict:
    started = time.perf_counter()
    history = train_digits_cnn(num_workers=workers, epochs=epochs, storage_path=storage, name=name)
    wall = time.perf_counter() - started
    return {"wall": wall, "history": history, "fit": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--results", type=Path, default=RESULTS, help="Markdown file to update")
    args = parser.parse_args()
    start_ray(2)
    storage = tempfile.mkdtemp(prefix="raykit-bench-overhead-")
    runs: dict = {"raykit": [], "hand-written": [], "raykit 1": [], "hand-written 1": []}
    for index in range(args.repeats):  # alternate (and swap who goes first), so drift hits both sides
        for workers in (WORKERS, 1):
            order = [("raykit", raykit_run), ("hand-written", baseline_run)]
            for side, run in order if index % 2 == 0 else order[::-1]:
                key = side if workers == WORKERS else f"{side} 1"
                runs[key].append(run(args.epochs, storage, f"{side}-{workers}w-{index}", workers))
    ray.shutdown()
    table = render(runs, args)
    print(table)
    write_section(SECTION, table, args.results)


def render(runs: dict, args) -> str:
    per_worker = digits_train_size() // WORKERS
    ours, theirs = runs["raykit"], runs["hand-written"]
    rate = {side: [steady_samples_per_worker(r["history"], per_worker) for r in runs[side]]
            for side in ("raykit", "hand-written")}
    ours_1, theirs_1 = runs["raykit 1"], runs["hand-written 1"]
    ratios = {"wall": [a["wall"] / b["wall"] for a, b in zip(ours, theirs)],
              "rate": [a / b for a, b in zip(rate["raykit"], rate["hand-written"])],
              "wall_1": [a["wall"] / b["wall"] for a, b in zip(ours_1, theirs_1)]}

    def verdict(key: str) -> str:
        sign, target = TARGETS[key]
        value = statistics.median(ratios[key])
        met = value <= target if sign == "<=" else value >= target
        return f"{spread(ratios[key], 2)} | {sign} {target} | {'met' if met else 'NOT met'}"

    def seconds(rs, part):
        return spread([part(r) for r in rs], 1, " s")

    def epochs(r):
        return sum(row["epoch_time_s"] for row in r["history"])

    def outside(r):  # raykit's own time around the Ray Train run
        return sum(r["timings"].get(key, 0.0) for key in ("spec_and_plan_s", "ray_start_s", "evaluation_task_s",
                                                          "outputs_s"))

    parameters = sum(p.numel() for p in digits_cnn().parameters())
    lines = [SECTION, "", machine_line() + f" The default job (digits CNN, {parameters:,} parameters on both sides; "
             f"{digits_train_size():,} training images) with {WORKERS} workers, Adam lr 1e-3, global batch "
             f"{32 * WORKERS} (32 per worker), {args.epochs} epochs, a checkpoint every epoch: `raykit.train` vs a "
             "hand-written minimal Ray Train script (`benchmarks/baselines/ray_train_minimal.py`), alternating in "
             f"one Ray instance (2 CPUs), {args.repeats} repeats; median (min, max). Samples/s per worker: median "
             "over epochs 2+ of training samples per worker / epoch time (training + validation).", "",
             "| measure | raykit | hand-written | ratio raykit / hand-written | target | |",
             "|---|---|---|---|---|---|",
             f"| wall time of a run | {seconds(ours, lambda r: r['wall'])} | {seconds(theirs, lambda r: r['wall'])} "
             f"| {verdict('wall')} |",
             f"| steady-state samples/s per worker | {spread(rate['raykit'], 0)} | {spread(rate['hand-written'], 0)} "
             f"| {verdict('rate')} |",
             f"| wall time of a run, 1 worker (raykit: inline, no worker group) | "
             f"{seconds(ours_1, lambda r: r['wall'])} | {seconds(theirs_1, lambda r: r['wall'])} "
             f"| {verdict('wall_1')} |",
             "",
             "Where the wall time goes (raykit: `result.timings`, the phases `result.json` records; hand-written: "
             "its whole Ray Train run, and its epochs):", "",
             "| part | raykit | hand-written |", "|---|---|---|",
             *[f"| {label} | {seconds(ours, lambda r, key=key: r['timings'].get(key, 0.0))} | "
               f"{seconds(theirs, epochs) if key == 'epochs_s' else '-'} |" for key, _, label in PHASES],
             f"| the Ray Train run (`fit`) | {seconds(ours, lambda r: r['wall'] - outside(r))} | "
             f"{seconds(theirs, lambda r: r['fit'])} |",
             f"| of which epochs (training + validation, from the epoch rows) | {seconds(ours, epochs)} | "
             f"{seconds(theirs, epochs)} |", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
