"""Run by tests/test_cluster_ray.py in its own process: one simulated multi-node cluster
(``ray.cluster_utils.Cluster``) for the placement and node-loss checks, so they pay for one cluster.

Nodes: a head with no CPUs (the driver and Train controller live there), two 1-CPU nodes offering one
"gpu_like" each and one 2-CPU node offering two, standing in for GPUs.
1. PACK: the default job, 1 epoch, 2 workers asking for ``{CPU: 1, gpu_like: 1}``: only the 2-CPU node
   holds both.
2. SPREAD and node loss: the default job, 4 epochs, 2 workers placed with SPREAD (one 2-CPU node could
   hold both); once epoch 2's checkpoint is committed, the node holding rank 1 is removed and a 1-CPU
   replacement added.
Prints one JSON line: the PACK placement; the history, node ids before and after, and the removed node.

    python tests/cluster_probe.py STORAGE
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ray  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

import raykit  # noqa: E402


def placement(run_dir: Path) -> dict:
    return {int(p.stem[4:]): json.loads(p.read_text())["node_id"] for p in (run_dir / "placement").glob("rank*.json")}


def pack(storage: str) -> list:
    raykit.train(None, ["train.epochs=1", "train.max_steps_per_epoch=2", f"storage={storage}", "name=pack",
                        "scaling.placement_strategy=PACK", "scaling.resources_per_worker={CPU: 1, gpu_like: 1}"],
                 verbose=False)
    return [node for _, node in sorted(placement(Path(storage) / "pack").items())]


def remove_node_after_epoch_2(cluster: Cluster, run_dir: Path, record: dict) -> None:
    snapshot = run_dir / "checkpoint_manager_snapshot.json"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if snapshot.is_file() and "checkpoint_epoch=0002" in snapshot.read_text():
            break
        time.sleep(0.1)
    record["before"] = placement(run_dir)
    manifest = json.loads((run_dir / "checkpoint_epoch=0002" / "manifest.json").read_text())
    record["checkpointed_times"] = [row["epoch_time_s"] for row in manifest["state"]["history"]]
    victim = next(node for node in cluster.worker_nodes if node.node_id == record["before"][1])
    record["removed"] = victim.node_id
    cluster.remove_node(victim)
    cluster.add_node(num_cpus=1)  # the replacement an autoscaler would bring


def spread_and_lose_a_node(cluster: Cluster, storage: str, record: dict) -> None:
    run_dir = Path(storage) / "node-loss"
    # Rank 0 lingers after epoch 2's report, so the node goes while the run is mid-flight.
    os.environ["RAYKIT_FAULTS"] = json.dumps([{"at": "after_report", "epoch": 2, "rank": 0, "action": "sleep",
                                              "seconds": 3, "once_file": str(Path(storage) / "slept")}])
    # Training runs in a thread: adding a node needs the main thread (it installs signal handlers).
    outcome: dict = {}

    def train() -> None:
        try:
            outcome["result"] = raykit.train(None, {"train.epochs": 4, "storage": storage, "name": "node-loss",
                                                    "scaling.max_failures": 2, "scaling.placement_strategy": "SPREAD"},
                                             verbose=False)
        except BaseException as exc:  # reported below
            outcome["error"] = exc

    trainer = threading.Thread(target=train, daemon=True)
    trainer.start()
    remove_node_after_epoch_2(cluster, run_dir, record)
    trainer.join(timeout=400)
    if "result" not in outcome:
        raise SystemExit(f"training did not finish: {outcome.get('error')!r}")
    result = outcome["result"]
    record["after"] = placement(run_dir)
    record["history"] = [{"epoch": row["epoch"], "epoch_time_s": row["epoch_time_s"]} for row in result.history]
    record["test_accuracy"] = result.test_accuracy


def main(storage: str) -> None:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    try:
        for name, amount in (("single-a", 1), ("single-b", 1), ("double", 2)):
            cluster.add_node(num_cpus=amount, resources={"gpu_like": amount, name: 1})
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=os.environ.get("PROBE_LOGS") == "1")
        record: dict = {"pack": pack(storage)}
        # Nodes come and go here: Ray Train's preemption watcher must stay on.
        record["preemption_watcher"] = os.environ.get("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "unset")
        spread_and_lose_a_node(cluster, storage, record)
        print("RESULT " + json.dumps(record), flush=True)
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
