"""`raykit up` / `raykit down`: a local Ray that outlives one command is joined by later commands (with the
token auth it needs), survives them, is stopped only by `raykit down`; a dead one is never joined and a Ray
raykit did not start is never stopped."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.ray


@pytest.fixture
def ray_temp(monkeypatch):
    """A Ray temp directory of this test's own (``RAY_TMPDIR``: `ray start`'s address file and raykit's
    record go there, so the test session's Ray and other users' are not seen), short enough for Ray's socket
    paths. Whatever Ray a test leaves there is stopped at the end, even on failure."""
    from raykit.ray import local

    path = Path(tempfile.mkdtemp(prefix="rkup", dir="/tmp"))
    monkeypatch.setenv("RAY_TMPDIR", str(path))
    yield path
    left = local.read_record()
    if left is not None and local.is_running(left):
        local.stop(left)
    shutil.rmtree(path, ignore_errors=True)


def fresh_shell_env(ray_temp: Path) -> dict:
    """A new shell's environment: no RAY_ADDRESS, and no RAY_AUTH_MODE (the session's in-process Ray set
    token mode for this process; a user's shell has none, and a client then sends no token unless raykit
    turns it on)."""
    env = {key: value for key, value in os.environ.items() if key not in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
    return {**env, "RAY_TMPDIR": str(ray_temp)}


def raykit(*args: str, env: dict, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "raykit", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


TINY_RUN = ["--set", "train.epochs=1", "--set", "train.max_steps_per_epoch=2", "--set", "scaling.num_workers=1"]


def test_a_ray_raykit_up_started_is_joined_by_train_survives_it_and_ctrl_c_and_down_stops_it(ray_temp, tmp_path):
    from raykit.ray import local

    env = fresh_shell_env(ray_temp)
    up = raykit("up", "--port", str(local.free_port()), env=env)
    assert up.returncode == 0, up.stdout + up.stderr
    started = local.running()
    assert started is not None and f"started a local Ray at {started.address}" in up.stdout
    assert started.auth_mode == "token" and "raykit down" in up.stdout
    again = raykit("up", env=env)
    assert again.returncode == 0 and "already up" in again.stdout and local.running() == started

    run = raykit("train", *TINY_RUN, "--set", f"storage={tmp_path}", "--set", "name=joined", env=env)
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    assert f"Connecting to existing Ray cluster at address: {started.address}" in run.stderr
    assert (tmp_path / "joined" / "result.json").is_file()
    assert local.running() == started  # the run's end left it up

    interrupted = interrupt_once_connected(["train", *TINY_RUN, "--set", f"storage={tmp_path}"], env)
    assert interrupted != 0
    assert local.running() == started  # Ctrl-C in a run that joined it left it up

    down = raykit("down", env=env)
    assert down.returncode == 0 and f"stopped the local Ray at {started.address}" in down.stdout
    assert local.read_record() is None and not session_members(started.session_id)
    assert not (ray_temp / "ray" / "ray_current_cluster").exists()  # nothing names the stopped Ray any more


def interrupt_once_connected(args: list[str], env: dict, timeout: float = 120) -> int:
    """Run ``raykit ARGS``, send it SIGINT (Ctrl-C) once it has joined a Ray, return its exit code."""
    process = subprocess.Popen([sys.executable, "-m", "raykit", *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    deadline, seen = time.monotonic() + timeout, []
    while not any("Connected to Ray cluster" in line for line in seen):
        assert time.monotonic() < deadline and process.poll() is None, "".join(seen)[-3000:]
        try:
            seen.append(lines.get(timeout=1))
        except queue.Empty:
            pass
    process.send_signal(signal.SIGINT)
    return process.wait(timeout=timeout)


def session_members(session_id: int) -> list[int]:
    from raykit.ray.local import _members

    return [process.pid for process in _members(session_id)]


NO_PID = 2**22 + 1  # above Linux's largest pid_max: no process has it, none ever will


def write_record(path: Path, **fields) -> None:
    record = {"address": "127.0.0.1:9", "session_dir": "/tmp/ray/session_gone", "session_id": NO_PID,
              "gcs_pid": NO_PID, "raylet_pid": NO_PID, "auth_mode": "token", "num_cpus": 2.0, "num_gpus": 0.0,
              "dashboard": "", "started_at": 0.0}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**record, **fields}))


def test_a_dead_ray_that_raykit_up_started_is_never_joined(ray_temp, monkeypatch):
    """A raykit-up Ray that died (killed, machine rebooted) leaves its record and `ray start`'s address file:
    neither is joined; the run starts a new local Ray at once."""
    import ray

    from raykit.ray import cluster, local

    write_record(local.record_path(), address="127.0.0.1:9")
    (ray_temp / "ray" / "ray_current_cluster").write_text("127.0.0.1:9")
    joined = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda address=None, **kwargs: joined.append(address))
    cluster.connect(None)
    (ray_temp / "ray" / "ray_current_cluster").unlink()  # the record alone
    cluster.connect(None)
    assert joined == ["local", "local"]


def test_down_stops_no_ray_it_did_not_start(ray_address, ray_temp):
    """`raykit down` refuses a running Ray that `ray start` (not raykit up) left, and a record whose pids now
    belong to other processes stops nothing."""
    import ray

    from raykit.cli import main
    from raykit.ray import local

    (ray_temp / "ray").mkdir()
    (ray_temp / "ray" / "ray_current_cluster").write_text(ray_address)  # as `ray start` would have left it
    assert main(["down"]) == 1
    assert ray.cluster_resources().get("CPU")  # the session's Ray is still up
    assert main(["up", "--status"]) == 1

    stranger = subprocess.Popen(["sleep", "60"], start_new_session=True)  # a process that is not a Ray
    try:
        write_record(local.record_path(), address=ray_address, session_id=stranger.pid, gcs_pid=stranger.pid,
                     raylet_pid=stranger.pid)
        assert local.running() is None
        assert main(["down"]) == 1  # the record is dropped; the session's Ray is still not raykit's to stop
        assert stranger.poll() is None and local.read_record() is None
    finally:
        stranger.kill()
        stranger.wait()
