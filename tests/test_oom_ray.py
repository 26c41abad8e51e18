"""A worker killed by Ray's memory monitor, provoked for real through the CLI: rank 0 takes memory (an
``allocate`` rule of RAYKIT_FAULTS) in the local Ray the CLI starts, whose kill threshold is set a few GiB above
what the node uses when the test starts, so the monitor fires long before the machine runs short. raykit
names the failure in one line: the killed worker's memory as Ray measured it, the spec fields that lower it,
how to resume.

Which process Ray kills: Ray 2.60's policy (worker_killing_policy_by_time.cc) kills restartable actors first,
then the most recently started, until enough memory would be freed. Here that is one of Ray Train's small
restartable actors and rank 0's worker (the newest, holding the memory); the Train controller, older, is
spared. raykit's message names the failed rank's worker, the one Ray's report gives with the most memory."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from raykit.cli import EXIT_FAILED
from tests.conftest import REPO
from tests.test_interrupts_ray import gone, own_lines, processes_mentioning

pytestmark = pytest.mark.ray

GiB = 2**30
# The threshold sits this far above the node's use at the start: the CLI's Ray and its worker take about
# 1.5 GiB of it by epoch 1, so rank 0 is killed after taking about 2 GiB more; it never takes over MOST.
HEADROOM = 3.5 * GiB
MOST = 4 * GiB


def ray_memory_view() -> tuple[int, int]:
    """(used, total) bytes of this node as Ray 2.60's memory monitor counts them (memory_monitor_utils.cc,
    swap left out: the test turns Ray's swap counting off): MemTotal - MemAvailable from /proc/meminfo, unless
    a cgroup memory limit below MemTotal binds; then the cgroup's usage less its file cache."""
    meminfo = {}
    with open("/proc/meminfo") as lines:
        for line in lines:
            key, value = line.split(":", 1)
            meminfo[key] = int(value.split()[0]) * 1024
    host_total, host_used = meminfo["MemTotal"], meminfo["MemTotal"] - meminfo["MemAvailable"]
    cgroup = cgroup_memory()
    if cgroup and cgroup[1] < host_total:
        return cgroup
    return host_used, host_total


def cgroup_memory() -> tuple[int, int] | None:
    """(used, limit) of this machine's root memory cgroup, v2 or else v1, as Ray reads it; None without one."""
    for limit_file, usage_file, stat_file, cache_keys in (
            ("memory.max", "memory.current", "memory.stat", ("inactive_file", "active_file")),
            ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes", "memory/memory.stat",
             ("total_inactive_file", "total_active_file"))):
        try:
            limit_text = read_cgroup(limit_file)
            if not limit_text.isdigit():  # "max": no limit
                return None
            stat = dict(line.split() for line in read_cgroup(stat_file).splitlines())
            used = int(read_cgroup(usage_file)) - sum(int(stat[key]) for key in cache_keys)
            return used, int(limit_text)
        except (OSError, KeyError, ValueError):
            continue
    return None


def read_cgroup(name: str) -> str:
    with open(os.path.join("/sys/fs/cgroup", name)) as file:
        return file.read().strip()


def test_a_worker_killed_by_ray_for_memory_is_named_with_its_memory_the_fields_and_the_resume(tmp_path):
    used, total = ray_memory_view()
    if total - used < HEADROOM + MOST:
        pytest.skip(f"{(total - used) / GiB:.1f} GiB free: too little to provoke Ray's memory monitor safely")
    fault = [{"at": "after_report", "epoch": 1, "rank": 0, "action": "allocate", "mb": MOST // 2**20,
              "seconds": 60}]  # not killed within a minute: it goes on, and the run succeeds (the test fails)
    ray_tmp = tempfile.mkdtemp(prefix="rk-", dir="/tmp")  # marks this Ray's processes
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    env.update(RAY_TMPDIR=ray_tmp, RAYKIT_FAULTS=json.dumps(fault), RAY_memory_monitor_refresh_ms="100",
               RAY_memory_usage_threshold=f"{(used + HEADROOM) / total:.4f}", RAY_min_memory_free_bytes="-1",
               RAY_count_swap_in_memory_monitor="false")
    try:
        ran = subprocess.run([sys.executable, "-m", "raykit.cli", "train", "--set", f"storage={tmp_path}",
                              "--set", "name=oom", "--set", "train.epochs=2", "--set", "scaling.num_workers=1",
                              "--set", "model.name=mlp", "--set", "scaling.inline=off"],  # Ray's monitor kills
                             cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
        assert gone(processes_mentioning(ray_tmp)), "processes of the Ray the CLI started outlived it"
        raylet_log = "".join(path.read_text(errors="replace")  # where the raylet reports whom it killed
                             for path in Path(ray_tmp).glob("*/session_*/logs/raylet.out"))
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    output = ran.stdout + ran.stderr
    assert ran.returncode == EXIT_FAILED, output[-4000:]
    lines = [line for line in ran.stderr.splitlines() if line.startswith("raykit: run failed: ")]
    assert len(lines) == 1, output[-4000:]
    assert "Traceback" not in own_lines(output)
    assert "Error shutting down worker group" not in output  # the dead worker is not shut down again, with a traceback
    line = lines[0]
    assert line.startswith("raykit: run failed: a worker was killed by Ray's memory monitor: its node ran out of "
                           "memory (the killed worker, pid "), line
    rank_zero = re.search(r"\(RayTrainWorker pid=(\d+)\)\S* epoch\s+1/2", output)  # its epoch line
    named = re.search(r"the killed worker, pid (\d+), held ([\d.]+) GiB when it was killed", line)
    assert rank_zero and named and named.group(1) == rank_zero.group(1), line
    reported = re.search(rf"Selected to kill: \([^\n]*\bpid={named.group(1)}, actual memory used=([\d.]+)GB",
                         raylet_log)
    assert reported and float(reported.group(1)) == float(named.group(2))  # the raylet's own measure of it
    assert float(named.group(2)) > 1  # it held what it took
    assert "above Ray's kill threshold of" in line
    assert "rank 0's resident memory peaked at" in line and "by epoch 1" in line
    for field in ("train.batch_size", "data.loader: stream", "scaling.resources_per_worker", "model.name"):
        assert field in line
    assert line.endswith("The run resumes from its last checkpoint with the same name (name=oom).")
