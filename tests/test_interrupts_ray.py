"""SIGTERM and Ctrl-C through the real CLI: exit 143 and 130, one line with the command that resumes the run,
which continues it; the run's lock is held meanwhile and released; the Ray the CLI started leaves no
process behind, and the Ray it joined keeps running."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from raykit.lock import LOCK_FILE
from tests.conftest import REPO, wait_for_committed_checkpoint

pytestmark = pytest.mark.ray


def start(args: list[str], env: dict, sleep_after_epoch: int) -> subprocess.Popen:
    """A CLI driver whose rank 0 sleeps after the given epoch's report (so it is surely mid-run when signalled)."""
    fault = [{"at": "after_report", "epoch": sleep_after_epoch, "rank": 0, "action": "sleep", "seconds": 300}]
    return subprocess.Popen([sys.executable, "-m", "raykit.cli", *args], cwd=REPO, text=True,
                            env={**env, "RAYKIT_FAULTS": json.dumps(fault)}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)


def stop(driver: subprocess.Popen, signum: int) -> str:
    """Send ``signum`` to the driver alone (not its process group), wait for it, return its output."""
    driver.send_signal(signum)
    try:
        output, _ = driver.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(driver.pid, signal.SIGKILL)
        raise
    return output


def own_lines(output: str) -> str:
    """The driver's own output, without the log lines Ray forwards from its actors (``(Name pid=N) ...``):
    with two Ray instances on one machine, Ray's PlacementGroupCleaner logs a traceback of its own."""
    return "\n".join(line for line in output.splitlines() if not re.match(r"(\x1b\[\d+m)?\(\w+ pid=\d+", line))


def processes_mentioning(text: str) -> list[int]:
    """Pids of live processes whose command line contains ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and text in (entry / "cmdline").read_bytes().decode(errors="replace"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def gone(pids: list[int], timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not [pid for pid in pids if Path(f"/proc/{pid}").exists()]:
            return True
        time.sleep(0.2)
    return False


def test_sigterm_then_ctrl_c_stop_cleanly_and_the_printed_command_resumes(ray_address, storage):
    run_dir = Path(storage) / "sig"
    args = ["train", "--set", f"storage={storage}", "--set", "name=sig", "--set", "train.epochs=3",
            "--set", "scaling.num_workers=1", "--set", "model.name=mlp", "--set", "scaling.inline=off"]

    # 1. Its own local Ray (no address; a short private RAY_TMPDIR marks that Ray's processes), then SIGTERM.
    # (One worker would train inline, without Ray; the worker group is what this stops: tests/test_inline.py.)
    ray_tmp = tempfile.mkdtemp(prefix="rk-", dir="/tmp")
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    try:
        driver = start(args, {**env, "RAY_TMPDIR": ray_tmp}, sleep_after_epoch=1)
        wait_for_committed_checkpoint(run_dir, "checkpoint_epoch=0001", driver, timeout=240)
        assert processes_mentioning(ray_tmp)  # its raylet and GCS are running
        output = stop(driver, signal.SIGTERM)
        assert driver.returncode == 143, output[-3000:]
        assert gone(processes_mentioning(ray_tmp)), "processes of the Ray the CLI started outlived it"
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    line = next(line for line in output.splitlines() if line.startswith("raykit: interrupted by SIGTERM"))
    assert "Traceback" not in own_lines(output)
    resume = shlex.split(line.split("resume the run with the same name: ", 1)[1])
    assert resume[:2] == ["raykit", "train"] and "name=sig" in resume
    assert not (run_dir / LOCK_FILE).exists()

    # 2. The printed command continues the run (from epoch 2), joining the session's Ray; while it runs, a
    # second driver with the same name is refused naming it; then Ctrl-C.
    driver = start([*resume[1:], "--address", ray_address], dict(os.environ), sleep_after_epoch=2)
    try:
        wait_for_committed_checkpoint(run_dir, "checkpoint_epoch=0002", driver, timeout=240)
        lease = json.loads((run_dir / LOCK_FILE).read_text())
        assert lease["pid"] == driver.pid
        second = subprocess.run([sys.executable, "-m", "raykit.cli", *resume[1:], "--address", ray_address],
                                cwd=REPO, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2 and f"pid {driver.pid}" in second.stderr, second.stderr[-2000:]
        assert "Traceback" not in second.stderr
    finally:
        output = stop(driver, signal.SIGINT)
    assert driver.returncode == 130, output[-3000:]
    assert "raykit: interrupted by SIGINT; resume the run with the same name: raykit train" in output
    assert "Traceback" not in own_lines(output)
    epochs = [int(n) for n in re.findall(r"epoch\s+(\d+)/3", output)]
    assert epochs and epochs[0] == 2  # continued after epoch 1, not started over
    workers = {int(pid) for pid in re.findall(r"\(RayTrainWorker pid=(\d+)", output)}
    assert workers and gone(sorted(workers)), "the run's workers outlived the interrupt"
    assert not (run_dir / LOCK_FILE).exists()

    import ray  # the Ray this driver joined is still there

    assert ray.is_initialized() and ray.get(ray.remote(lambda: 1).remote()) == 1


def test_a_controller_that_does_not_answer_the_abort_is_killed(ray_address, monkeypatch):
    """Ctrl-C asks the Ray Train controller to abort; one that does not answer in time (a CI machine's run
    hung there for good, its workers starting) is killed, and the driver goes on to exit."""
    import ray

    from raykit.ray import data_parallel

    @ray.remote(num_cpus=0)
    class Deaf:
        def abort(self):
            time.sleep(600)

        def ping(self):
            return "alive"

    controller = Deaf.remote()
    assert ray.get(controller.ping.remote()) == "alive"
    monkeypatch.setattr(data_parallel, "ABORT_WAIT_S", 1.0)
    started = time.monotonic()
    data_parallel.abort(controller)
    assert time.monotonic() - started < 30
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(controller.ping.remote(), timeout=30)


def test_the_placement_group_a_dead_controller_left_is_released_and_no_other(ray_address):
    """raykit train runs without Ray's PlacementGroupCleaner actor; the driver releases what a controller
    that died (killed after a Ctrl-C it did not answer, out of memory) left: the placement groups of this job
    made during the fit. One made before it, or by another job, stays."""
    import ray
    from ray.util.placement_group import placement_group, placement_group_table, remove_placement_group

    from raykit.ray.data_parallel import placement_groups_released

    @ray.remote(num_cpus=0)
    class Controller:
        def reserve(self):
            group = placement_group([{"CPU": 1}])
            ray.get(group.ready())
            return group.id.hex()

    earlier = placement_group([{"CPU": 0.5}])
    ray.get(earlier.ready())
    controller = Controller.remote()
    with placement_groups_released():
        left = ray.get(controller.reserve.remote())
        ray.kill(controller)  # dies holding it: Ray keeps it until the job ends
        time.sleep(1)
        assert placement_group_table()[left]["state"] == "CREATED"
    deadline = time.monotonic() + 30
    while placement_group_table()[left]["state"] != "REMOVED":
        assert time.monotonic() < deadline, placement_group_table()[left]
        time.sleep(0.2)
    assert placement_group_table()[earlier.id.hex()]["state"] == "CREATED"
    remove_placement_group(earlier)
