"""Shared fixtures. One Ray instance serves the whole test session (starting Ray costs seconds)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

# The suite runs torch and TensorFlow code in one process. Loading triton's native library (torch imports
# it lazily, via torch._dynamo, on the first optimizer step) after TensorFlow's segfaults; loading it
# first is fine. raykit itself never mixes them in a process: each worker runs one backend.
import torch._dynamo  # noqa: E402,F401

REPO = Path(__file__).resolve().parents[1]
# Each report() waits for the controller's poll; a short interval keeps tiny epochs fast.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")


@pytest.fixture(scope="session")
def ray_address():
    """A local Ray (2 CPUs, like CI) for the session; yields the address other processes can join."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=True)
    address = ray.get_runtime_context().gcs_address
    yield address
    ray.shutdown()


@pytest.fixture
def storage(tmp_path) -> str:
    """A fresh storage root for runs."""
    return str(tmp_path / "runs")


def run_cli(args: list[str], *, env_extra: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run a command line (``python -m raykit.cli`` or a script) from the repo root, capturing output."""
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def evaluated_on_rank_zero(monkeypatch) -> None:
    """Make the driver's fallback (a Ray task evaluating the best checkpoint) an error: the test metrics
    must then come from rank 0, which must have evaluated the checkpoint Ray ranked best."""
    def task_evaluation(*args, **kwargs):
        raise AssertionError("rank 0 did not evaluate the checkpoint Ray ranked best")

    monkeypatch.setattr("raykit.ray.remote.evaluate", task_evaluation)


def wait_for_committed_checkpoint(run_dir: Path, dir_name: str, process: subprocess.Popen, timeout: float) -> None:
    """Until Ray's snapshot (what a resume reads) lists ``dir_name``; fails when ``process`` (a driver whose
    stdout is piped) exits first."""
    snapshot = run_dir / "checkpoint_manager_snapshot.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if snapshot.is_file() and dir_name in snapshot.read_text():
            return
        if process.poll() is not None:
            raise AssertionError(f"driver exited early: {process.stdout.read()[-3000:]}")
        time.sleep(0.2)
    raise AssertionError(f"{dir_name} was not committed within {timeout}s")


@pytest.fixture
def decoded_images(monkeypatch) -> list[str]:
    """The name of every image raykit's data sources decode from now on, in order."""
    from raykit.data import sources

    decoded: list[str] = []
    real = sources.decode

    def counting(data: bytes, name: str, *args):
        decoded.append(name)
        return real(data, name, *args)

    monkeypatch.setattr(sources, "decode", counting)
    return decoded
