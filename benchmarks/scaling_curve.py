"""Scaling curve: steady-state samples/s of the default digits CNN job through raykit with 1, 2 and 4
workers on a simulated multi-node cluster.

`ray.cluster_utils.Cluster` starts a head node with no CPUs (it holds only the driver and Ray Train's
controller) and 4 worker nodes of 1 CPU each, all on this machine, so each Train worker gets a node of
its own. The batch per worker stays 32 (global batch 32 x workers). Each worker count trains `--epochs`
epochs, `--repeats` times, cycling through the counts. Samples/s per worker: median over epochs 2+ of
training samples per worker / epoch time (training + validation); aggregate = per worker x workers;
speed-up = aggregate / aggregate with 1 worker. The simulated nodes share this machine's cores, so on a
machine with fewer cores than nodes they oversubscribe and the cores, not Ray, cap the curve.

    .venv/bin/python benchmarks/scaling_curve.py [--workers 1 2 4] [--nodes 4] [--repeats 2] [--epochs 3]
        [--results FILE]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")

import ray  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

import raykit  # noqa: E402
from benchmarks.common import (RESULTS, digits_train_size, machine_line, spread,  # noqa: E402
                               steady_samples_per_worker, write_section)

SECTION = "## Scaling curve"
NODES = 4
BATCH_PER_WORKER = 32


def per_worker_rate(address: str, workers: int, epochs: int, storage: str, name: str) -> float:
    result = raykit.train(None, {"train.epochs": epochs, "train.batch_size": BATCH_PER_WORKER * workers,
                                 "scaling.num_workers": workers, "storage": storage, "name": name},
                          address=address, verbose=False)
    return steady_samples_per_worker(result.history, digits_train_size() // workers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4], help="worker counts, at most --nodes")
    parser.add_argument("--nodes", type=int, default=NODES, help="simulated worker nodes of 1 CPU each")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--results", type=Path, default=RESULTS, help="Markdown file to update")
    args = parser.parse_args()
    if max(args.workers) > args.nodes:
        parser.error(f"--workers: at most --nodes ({args.nodes})")
    storage = tempfile.mkdtemp(prefix="raykit-bench-scaling-")
    cluster = Cluster(initialize_head=True, connect=False, head_node_args={"num_cpus": 0, "include_dashboard": False})
    try:
        for _ in range(args.nodes):
            cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        rates: dict = {workers: [] for workers in args.workers}
        for index in range(args.repeats):  # cycle through the counts, so drift on a shared machine hits all
            for workers in args.workers:
                rates[workers].append(per_worker_rate(cluster.address, workers, args.epochs, storage,
                                                      f"workers{workers}-{index}"))
    finally:
        ray.shutdown()
        cluster.shutdown()  # no raylets left behind
    table = render(rates, args)
    print(table)
    write_section(SECTION, table, args.results)


def render(rates: dict, args) -> str:
    baseline = statistics.median(rates[min(rates)]) * min(rates)
    lines = [SECTION, "", machine_line() + f" The default job (digits CNN, {digits_train_size():,} training images) "
             f"through `raykit.train` on a simulated cluster (`ray.cluster_utils.Cluster`: a head with 0 CPUs and "
             f"{args.nodes} worker nodes of 1 CPU each, all on this machine), {args.epochs} epochs, "
             f"{args.repeats} repeats per worker count; median (min, max). The batch per worker is kept at "
             f"{BATCH_PER_WORKER} (global batch "
             f"{BATCH_PER_WORKER} x workers). Samples/s per worker: median over epochs 2+ of training samples per "
             "worker / epoch time (training + validation); aggregate = per worker x workers. "
             f"**This machine has {os.cpu_count()} physical cores**: simulated nodes beyond that share cores, so "
             f"the cores cap the curve above {os.cpu_count()} workers (and the gradient all-reduce competes with "
             "training for them). One worker runs without DDP (`prepare_model` wraps only groups of 2 or more), "
             "so it pays no gradient all-reduce; time per step is one worker's epoch time per batch of "
             f"{BATCH_PER_WORKER}, validation included.", "",
             "| workers | aggregate samples/s | samples/s per worker | time per step, ms | "
             f"speed-up vs {min(rates)} worker |",
             "|---|---|---|---|---|"]
    for workers, values in rates.items():
        aggregate = [value * workers for value in values]
        lines.append(f"| {workers} | {spread(aggregate, 0)} | {spread(values, 0)} | "
                     f"{spread([1000 * BATCH_PER_WORKER / value for value in values], 1)} | "
                     f"{statistics.median(aggregate) / baseline:.2f} |")
    return "\n".join(lines + [""])


if __name__ == "__main__":
    main()
