"""Jobs end to end: a real `ray start --head` with token auth, `ray job submit` and JobSubmissionClient
(placement across nodes: tests/test_cluster_ray.py)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from ray._common.utils import get_ray_address_file

from tests.conftest import REPO

pytestmark = pytest.mark.ray
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def head_node(tmp_path):
    """A Ray head started like a cluster would be (`ray start --head`, dashboard on 127.0.0.1, token auth),
    with the venv first on PATH so that jobs' `python` finds raykit. Stopped at the end, even on failure,
    by killing its process group (not `ray stop`, which would stop every Ray on the machine)."""
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "RAY_AUTH_MODE": "token"}
    # `ray start` records its address for later `ray.init()` calls; a killed head would leave it naming a
    # dead cluster on this machine.
    address_file = Path(get_ray_address_file(None))
    before = address_file.read_text() if address_file.is_file() else None
    subprocess.run([str(BIN / "ray"), "get-auth-token", "--generate"], env=env, check=True, capture_output=True)
    dashboard = free_port()
    head = subprocess.Popen([str(BIN / "ray"), "start", "--head", "--block", f"--port={free_port()}",
                             "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", "--num-cpus=2",
                             "--include-dashboard=true", "--disable-usage-stats",
                             # Its own agent ports: the session's Ray (other tests) already holds the defaults,
                             # and a job agent that cannot bind its port never takes a submission.
                             f"--dashboard-agent-listen-port={free_port()}", f"--metrics-export-port={free_port()}"],
                            env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    address = f"http://127.0.0.1:{dashboard}"
    try:
        _wait_for_dashboard(address, env, head)
        yield address, env
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=5)  # it usually needs longer (measured: 30 s were always used up); nothing to keep
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        _restore(address_file, before)


def _restore(path: Path, text: str | None) -> None:
    if text is None:
        path.unlink(missing_ok=True)
    else:
        path.write_text(text)


def _wait_for_dashboard(address: str, env: dict, head: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if head.poll() is not None:
            raise AssertionError(f"ray start exited: {head.stdout.read()[-3000:]}")
        probe = subprocess.run([str(BIN / "ray"), "job", "list", "--address", address], env=env,
                               capture_output=True, text=True)
        if probe.returncode == 0:
            return
        time.sleep(1)
    raise AssertionError("the dashboard never answered")


def test_ray_job_submit_and_job_submission_client(head_node, tmp_path):
    address, env = head_node
    storage = tmp_path / "runs"
    command = [str(BIN / "ray"), "job", "submit", "--address", address, "--runtime-env", "jobs/runtime_env.yaml",
               "--", "python", "jobs/train.py", "jobs/configs/digits_cnn_torch.yaml", "--smoke-test",
               "--set", f"storage={storage}", "--set", "name=submitted", "--set", "train.metrics=[macro_f1]"]
    for _ in range(15):  # the head answers `ray job list` a little before its job agent takes submissions
        submitted = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        if "No available agent to submit job" not in submitted.stderr + submitted.stdout:
            break
        time.sleep(2)
    assert submitted.returncode == 0, submitted.stdout[-3000:] + submitted.stderr[-3000:]
    assert "succeeded" in submitted.stdout + submitted.stderr
    run_dir = storage / "submitted"
    assert (run_dir / "spec.yaml").is_file() and (run_dir / "metrics.csv").read_text().count("\n") == 2
    checkpoint = next(run_dir.glob("checkpoint_epoch=*"))
    assert (checkpoint / "manifest.json").is_file()

    # The Python SDK, with the same runtime env: evaluate that checkpoint.
    from ray.job_submission import JobStatus, JobSubmissionClient

    # This process imported Ray with token auth off; send the token explicitly, as --headers would.
    token = subprocess.run([str(BIN / "ray"), "get-auth-token"], env=env, capture_output=True, text=True,
                           check=True).stdout.strip().splitlines()[-1]
    runtime_env = yaml.safe_load((REPO / "jobs/runtime_env.yaml").read_text())
    runtime_env["working_dir"] = str(REPO)
    client = JobSubmissionClient(address, headers={"Authorization": f"Bearer {token}"})
    job = client.submit_job(entrypoint=f"python jobs/evaluate.py '{checkpoint}' --split test",
                            runtime_env=runtime_env)
    deadline = time.monotonic() + 300
    while client.get_job_status(job) not in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
        assert time.monotonic() < deadline, "evaluation job did not finish"
        time.sleep(1)
    logs = client.get_job_logs(job)
    assert client.get_job_status(job) == JobStatus.SUCCEEDED, logs[-3000:]
    report = json.loads((run_dir / "evaluation" / "evaluation-test.json").read_text())
    assert report["samples"] == 269 and len(report["confusion_matrix"]) == 10
    # train.metrics of the checkpoint's spec, named as a run's test metrics: macro F1 of the classes present.
    f1 = [row["f1"] for row, actual, predicted in zip(report["per_class"], np.sum(report["confusion_matrix"], 1),
                                                      np.sum(report["confusion_matrix"], 0)) if actual + predicted]
    assert report["metrics"]["test_acc"] == pytest.approx(report["accuracy"])
    assert report["metrics"]["test_macro_f1"] == pytest.approx(np.mean(f1)) and "test_macro_f1" in logs
    assert (run_dir / "evaluation" / "confusion-test.png").read_bytes()[:4] == b"\x89PNG"
    assert "test accuracy:" in logs
