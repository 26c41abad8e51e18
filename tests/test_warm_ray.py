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


class FakeProcess:
    """A Popen-like process that records, in one shared log, what was done to it."""

    pid = 2**30  # above any pid_max: no such process, so no children

    def __init__(self, name: str, log: list, exits_on_sigterm: bool):
        self.name, self.log, self.exits_on_sigterm, self.returncode = name, log, exits_on_sigterm, None

    def poll(self):
        return self.returncode

    def terminate(self):
        self.log.append(("terminate", self.name))
        if self.exits_on_sigterm:
            self.returncode = -15

    def wait(self, timeout=None):
        self.log.append(("wait", self.name))
        if self.returncode is None:
            raise subprocess.TimeoutExpired(self.name, timeout)
        return self.returncode


def test_a_ray_this_process_started_stops_its_processes_together(monkeypatch):
    """Ray stops its processes one after another, each given a second on SIGTERM, which the raylet, GCS and
    monitor let pass (3-4 s at every exit here): all but the reaper get SIGTERM before any is waited for, a
    quarter second in all, and Ray's own shutdown then kills what is left without waiting again, the reaper
    last, as before. A joined Ray (no processes of ours) is left as it is."""
    from types import SimpleNamespace

    from raykit.ray import cluster

    log: list = []
    kinds = {"raylet": False, "gcs_server": True, "monitor": False, "reaper": True}
    node = SimpleNamespace(all_processes={kind: [SimpleNamespace(process=FakeProcess(kind, log, exits))]
                                          for kind, exits in kinds.items()})
    node.kill_all_processes = lambda **kwargs: log.append(("ray kills the rest", kwargs))
    monkeypatch.setattr(cluster, "STOP_GRACE_S", 0.05)
    cluster.stop_processes_together(node)
    node.kill_all_processes(check_alive=False, allow_graceful=True, wait=False)
    terminated = [name for action, name in log if action == "terminate"]
    assert terminated == ["raylet", "gcs_server", "monitor"]  # every one before the first wait; not the reaper
    assert [action for action, _ in log][:3] == ["terminate"] * 3 and ("wait", "raylet") in log
    assert log[-1] == ("ray kills the rest", {"check_alive": False, "allow_graceful": False, "wait": False})
    joined = SimpleNamespace(all_processes={}, kill_all_processes="Ray's own")
    cluster.stop_processes_together(joined)
    cluster.stop_processes_together(None)
    assert joined.kill_all_processes == "Ray's own"


def test_what_a_started_ray_s_processes_started_is_stopped_with_them(monkeypatch):
    """The raylet's agents and workers outlive a killed raylet (by a minute, seen here): they are stopped with
    it, on SIGTERM or, ignoring that, by SIGKILL."""
    from types import SimpleNamespace

    import psutil

    from raykit.ray import cluster

    # A "raylet" (ignoring SIGTERM, as Ray 2.60's does for seconds) whose child ignores SIGTERM too.
    raylet = subprocess.Popen(["sh", "-c", "trap '' TERM; sleep 60 & wait"])
    deadline = time.monotonic() + 10
    while not psutil.Process(raylet.pid).children() and time.monotonic() < deadline:
        time.sleep(0.05)
    child = psutil.Process(raylet.pid).children()[0]
    node = SimpleNamespace(all_processes={"raylet": [SimpleNamespace(process=raylet)]})

    def ray_kills_its_own(**kwargs):
        raylet.kill()
        raylet.wait()

    node.kill_all_processes = ray_kills_its_own
    monkeypatch.setattr(cluster, "STOP_GRACE_S", 0.1)
    cluster.stop_processes_together(node)
    node.kill_all_processes(check_alive=False, allow_graceful=True, wait=False)
    child.wait(timeout=10)  # (psutil.TimeoutExpired if it were left running)
    assert not child.is_running()


STARTED_RAY_PROBE = """
import signal, sys
import ray
from raykit.ray import cluster
cluster.connect(None)
node = ray._private.worker._global_node
for kind, infos in node.all_processes.items():
    for info in infos:
        status = open(f"/proc/{info.process.pid}/status").read()
        blocked = int(next(line for line in status.splitlines() if line.startswith("SigBlk")).split()[1], 16)
        print(kind, bool(blocked & (1 << (signal.SIGTERM - 1))))
import psutil
ours = [psutil.Process(info.process.pid) for infos in node.all_processes.values() for info in infos]
for process in ours + [child for process in ours for child in process.children(recursive=True)]:
    print("process", f"{process.pid}:{process.create_time()}")
"""


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads signal masks from /proc (Linux)")
def test_the_processes_of_a_ray_started_here_stop_on_sigterm_and_leave_nothing(ray_temp):
    """cluster.connect holds back Ctrl-C while joining a running Ray; a Ray it starts must not inherit that
    block (its raylet and GCS then ignored SIGTERM). At exit its processes, and what they started, are gone."""
    out = subprocess.run([sys.executable, "-c", STARTED_RAY_PROBE], cwd=REPO, env=fresh_shell_env(ray_temp),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [line.split() for line in out.stdout.splitlines()]
    blocked = {kind: value for kind, value in lines if kind != "process"}
    assert {"raylet", "gcs_server"} <= set(blocked) and set(blocked.values()) == {"False"}, blocked
    import psutil

    started = [value.split(":") for kind, value in lines if kind == "process"]
    assert len(started) > len(blocked)  # the raylet's agents (and workers) among them

    def alive(pid: str, created: str) -> bool:  # (an exited process left unreaped, a zombie, is not)
        try:
            process = psutil.Process(int(pid))
            return process.create_time() == float(created) and process.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    assert [pid for pid, created in started if alive(pid, created)] == []


def test_a_port_is_free_once_nothing_listens_even_with_connections_in_time_wait():
    """`raykit up` right after `raykit down`: the stopped GCS's connections wait out TIME_WAIT on its port,
    which Ray's server binds anyway; only a listener makes the port taken."""
    import socket

    from raykit.ray.local import _port_is_free

    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    assert not _port_is_free(port)
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = server.accept()
    accepted.close()  # the server side closes first: its end of the connection waits in TIME_WAIT
    client.close()
    server.close()
    assert _port_is_free(port)
