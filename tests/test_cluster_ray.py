"""A (simulated) multi-node cluster: workers placed across nodes by PACK and SPREAD, and a whole node lost
mid-run, survived from the last checkpoint on the remaining nodes plus a replacement. The cluster lives in
its own process (tests/cluster_probe.py), beside the session's Ray."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_pack_and_spread_place_workers_and_a_removed_node_is_survived_from_the_last_checkpoint(tmp_path):
    # Its own session: on a hang the whole group (driver, raylets, GCS) is killed, not only the driver.
    probe = subprocess.Popen([sys.executable, "tests/cluster_probe.py", str(tmp_path)], cwd=REPO, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        output, _ = probe.communicate(timeout=540)
    finally:
        if probe.poll() is None:
            os.killpg(probe.pid, signal.SIGKILL)
            probe.wait()
    assert probe.returncode == 0, output[-4000:]
    record = json.loads(next(line for line in output.splitlines() if line.startswith("RESULT "))[7:])
    assert len(record["pack"]) == 2 and len(set(record["pack"])) == 1  # both on the one node that holds both
    assert record["preemption_watcher"] == "unset"  # a multi-node cluster keeps Ray Train's default (on)
    assert len(set(record["before"].values())) == 2  # SPREAD: one worker per node though one node holds both
    assert record["removed"] == record["before"]["1"]
    assert record["removed"] not in record["after"].values()  # the restarted group avoided the dead node
    assert [row["epoch"] for row in record["history"]] == [1, 2, 3, 4]
    # Epochs 1-2 were not retrained: their timings are the ones saved in epoch 2's checkpoint.
    assert [row["epoch_time_s"] for row in record["history"][:2]] == record["checkpointed_times"]
    assert record["test_accuracy"] > 0.9
