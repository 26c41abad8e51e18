"""The run lock (raykit/lock.py) without Ray: acquire, refuse while alive, take over when stale, release on
every exit path; on local disk, file:// and an fsspec store (memory://)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from raykit import lock
from raykit.lock import LOCK_FILE, Lease, RunLock, RunLocked


@pytest.fixture(params=["local", "file", "memory"])
def run_dir(request, tmp_path, monkeypatch) -> str:
    """A run directory on each kind of store the lock supports."""
    monkeypatch.setattr(lock, "SETTLE_S", 0.0)
    if request.param == "local":
        return str(tmp_path / "runs" / "exp")
    if request.param == "file":
        return f"file://{tmp_path}/runs/exp"
    return f"memory://raykit-lock-tests/{tmp_path.name}/exp"


def read_lease(run_dir: str) -> Lease | None:
    from raykit import storage

    path = storage.join(run_dir, LOCK_FILE)
    if run_dir.startswith("memory://"):
        import fsspec

        fs, inner = fsspec.core.url_to_fs(path)
        return Lease.decode(fs.cat(inner)) if fs.exists(inner) else None
    return Lease.decode(storage.read_bytes(path)) if storage.exists(path) else None


def write_lease(run_dir: str, **changes) -> None:
    from raykit import storage

    lease = Lease.new("run", 30.0)
    for key, value in changes.items():
        setattr(lease, key, value)
    path = storage.join(run_dir, LOCK_FILE)
    if run_dir.startswith("memory://"):
        import fsspec

        with fsspec.open(path, "wb") as handle:
            handle.write(lease.encode())
    else:
        storage.write_bytes(path, lease.encode())


def test_a_second_run_is_refused_naming_the_owner_until_the_first_releases(run_dir):
    first = RunLock(run_dir).acquire()
    lease = read_lease(run_dir)
    assert (lease.host, lease.pid, lease.kind) == (socket.gethostname(), os.getpid(), "run")
    with pytest.raises(RunLocked) as refused:
        RunLock(run_dir).acquire()
    message = str(refused.value)
    assert refused.value.fields == ["name"]
    assert f"pid {os.getpid()}" in message and socket.gethostname() in message and LOCK_FILE in message
    first.release()
    assert read_lease(run_dir) is None
    with RunLock(run_dir):  # free again
        assert read_lease(run_dir) is not None
    assert read_lease(run_dir) is None


def test_a_dead_owner_on_this_host_does_not_block_a_resume(run_dir):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    write_lease(run_dir, pid=int(dead.stdout))  # its process has exited; its heartbeat is fresh
    with RunLock(run_dir) as taken:
        assert read_lease(run_dir).token == taken.lease.token


def test_a_stale_heartbeat_from_another_host_does_not_block_and_a_fresh_one_does(run_dir):
    write_lease(run_dir, host="elsewhere", heartbeat=time.time() - 10)
    with pytest.raises(RunLocked, match="host elsewhere"):
        RunLock(run_dir).acquire()
    write_lease(run_dir, host="elsewhere", heartbeat=time.time() - lock.STALE_AFTER * 30.0 - 1)
    with RunLock(run_dir):
        assert read_lease(run_dir).host == socket.gethostname()


def test_a_reused_pid_is_not_taken_for_the_owner(run_dir):
    if not os.path.isdir("/proc"):
        pytest.skip("process start times come from /proc")
    write_lease(run_dir, process_start="1")  # this very pid, but a process that started at another time
    with RunLock(run_dir):
        pass


def test_the_lock_is_released_when_the_block_raises_or_is_interrupted(run_dir):
    from raykit.interrupts import Interrupted

    for error in (RuntimeError("the run failed"), Interrupted()):
        with pytest.raises(type(error)):
            with lock.held(run_dir):
                assert read_lease(run_dir) is not None
                raise error
        assert read_lease(run_dir) is None


def test_the_heartbeat_is_refreshed_while_held_and_a_taken_over_lease_is_left_alone(run_dir):
    held = RunLock(run_dir, heartbeat_s=0.05).acquire()
    first = read_lease(run_dir).heartbeat
    deadline = time.monotonic() + 5
    while read_lease(run_dir).heartbeat == first and time.monotonic() < deadline:
        time.sleep(0.02)
    assert read_lease(run_dir).heartbeat > first
    write_lease(run_dir, token="someone-else")  # another run took it over (say this one looked dead)
    held.release()
    assert read_lease(run_dir).token == "someone-else"  # not removed by the run that lost it


def test_a_storage_where_the_lock_cannot_be_written_is_named(tmp_path):
    (tmp_path / "a-file").write_text("")  # a run directory below a file cannot be created (root included)
    with pytest.raises(lock.InputError) as refused:
        RunLock(str(tmp_path / "a-file" / "exp")).acquire()
    assert refused.value.fields == ["storage"] and str(tmp_path / "a-file" / "exp") in str(refused.value)


def test_a_lease_that_does_not_read_is_stale(tmp_path):
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / LOCK_FILE).write_bytes(b"\x00garbage")
    with RunLock(str(tmp_path / "exp")) as taken:
        assert json.loads((tmp_path / "exp" / LOCK_FILE).read_text())["token"] == taken.lease.token
