"""Run by tests/test_jobs_ray.py in its own process: a simulated 3-node cluster (ray.cluster_utils), and the
default job with 2 workers placed with SPREAD, then PACK. Prints one JSON line: strategy -> node id per rank.

Nodes: a head with no CPUs (the driver and Train controller live there), two nodes offering one
"gpu_like" each, and one node offering two, standing in for GPUs."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from ray.cluster_utils import Cluster

import raykit


def main() -> None:
    cluster = Cluster(initialize_head=True, connect=False, head_node_args={"num_cpus": 0})
    try:
        for name, amount in (("single-a", 1), ("single-b", 1), ("double", 2)):
            cluster.add_node(num_cpus=amount, resources={"gpu_like": amount, name: 1})
        cluster.wait_for_nodes()
        storage = tempfile.mkdtemp(prefix="raykit-placement-")
        placed = {}
        for strategy in ("SPREAD", "PACK"):
            raykit.train(None, ["train.epochs=1", "train.max_steps_per_epoch=2", f"storage={storage}",
                                f"name={strategy.lower()}", f"scaling.placement_strategy={strategy}",
                                "scaling.resources_per_worker={CPU: 1, gpu_like: 1}"],
                         address=cluster.address, verbose=False)
            ranks = sorted(Path(storage, strategy.lower(), "placement").glob("rank*.json"))
            placed[strategy] = [json.loads(p.read_text())["node_id"] for p in ranks]
        print("PLACEMENT " + json.dumps(placed), flush=True)
    finally:
        import ray

        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    sys.exit(main())
