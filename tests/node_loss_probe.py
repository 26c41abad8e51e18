"""Run by test_node_loss_ray.py in its own process: a simulated 3-node cluster (``ray.cluster_utils.Cluster``:
a head with no CPUs for work, two 1-CPU worker nodes) trains the default job with 2 workers; once epoch 2's
checkpoint is committed, the node holding rank 1 is removed and a replacement node added. Prints one JSON
line: the history, the node ids before and after, and the removed node's id.

    python tests/node_loss_probe.py STORAGE
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


def main(storage: str) -> None:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    for _ in range(2):
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=os.environ.get("PROBE_LOGS") == "1")
    run_dir = Path(storage) / "node-loss"
    record: dict = {}
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
    try:
        remove_node_after_epoch_2(cluster, run_dir, record)
        trainer.join(timeout=400)
    finally:
        if "result" not in outcome:
            ray.shutdown()
            cluster.shutdown()
    if "result" not in outcome:
        raise SystemExit(f"training did not finish: {outcome.get('error')!r}")
    result = outcome["result"]
    record["after"] = placement(run_dir)
    record["history"] = [{"epoch": row["epoch"], "epoch_time_s": row["epoch_time_s"]} for row in result.history]
    record["test_accuracy"] = result.test_accuracy
    print("RESULT " + json.dumps(record), flush=True)
    ray.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
