"""Why a run failed, in the user's terms (raykit.failures): a full disk and a worker killed for memory, found
inside the errors Ray Train raises, and passed through the CLI as one message."""

from __future__ import annotations

import errno

import pytest
from ray.exceptions import OutOfMemoryError, RayTaskError
from ray.train import WorkerGroupError
from ray.train.v2._internal.exceptions import WorkerHealthCheckFailedError

from raykit import cli, faults
from raykit.failures import RunFailedError, explain
from raykit.history import history_csv


def test_a_full_disk_inside_a_worker_failure_is_named_with_the_file_and_how_to_resume(tmp_path, monkeypatch):
    monkeypatch.setenv(faults.ENV, '[{"at": "between_checkpoint_files", "action": "enospc", "path": "/t/model.pt"}]')
    with pytest.raises(OSError) as raised:
        faults.inject("between_checkpoint_files", epoch=3, rank=0)
    assert raised.value.errno == errno.ENOSPC
    wrapped = RayTaskError("train_fn", "Traceback ...", raised.value)  # what Ray hands the controller
    error = WorkerGroupError("rank 0 failed", {0: wrapped})
    explained = explain(error, "run-a", str(tmp_path))
    assert isinstance(explained, RunFailedError)
    assert "no space left on the device (/t/model.pt)" in str(explained)
    assert f"already in {tmp_path} are complete" in str(explained) and "(name=run-a)" in str(explained)


def test_a_worker_killed_for_memory_names_its_peak_and_the_fields_that_change_it(tmp_path):
    (tmp_path / "metrics.csv").write_text(history_csv([{"epoch": 1, "val_acc": 0.5, "peak_rss_mb": 1234.0},
                                                       {"epoch": 2, "val_acc": 0.6, "peak_rss_mb": 2345.6}]))
    oom = OutOfMemoryError("Task was killed due to the node running low on memory. Memory on the node was 23 GB")
    explained = str(explain(WorkerGroupError("rank 1 died", {1: oom}), "big", str(tmp_path)))
    assert "killed by Ray's memory monitor" in explained
    assert "peaked at 2,346 MiB by epoch 2" in explained
    assert "train.batch_size" in explained and "data.loader: stream" in explained and "(name=big)" in explained


def resident_mib() -> float:
    """This process's resident memory (VmRSS), in MiB."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024


def test_allocate_takes_resident_memory_in_steps_and_holds_it(monkeypatch):
    slept = []  # (seconds, resident MiB then): the sleeps between steps, then the hold
    monkeypatch.setattr(faults.time, "sleep", lambda seconds: slept.append((seconds, resident_mib())))
    monkeypatch.setenv(faults.ENV, '[{"at": "mid_epoch", "rank": 0, "action": "allocate", "mb": 300, "seconds": 5}]')
    faults.inject("mid_epoch", epoch=1, rank=1)
    assert slept == []  # another rank's rule
    before = resident_mib()
    faults.inject("mid_epoch", epoch=1, rank=0)
    assert [seconds for seconds, _ in slept] == [0.05, 0.05, 0.05, 5]  # 128 + 128 + 44 MiB, then held 5 s
    assert slept[0][1] - before >= 120 and slept[-1][1] - before >= 290  # written, so resident


# What Ray 2.60 raised when its memory monitor killed rank 0 (tests/test_oom_ray.py provokes it), shortened:
# the worker's metadata, then the raylet's report. It killed a restartable actor of Ray Train's with the worker.
RAY_OOM_WORKER = """A worker health check failed.
Worker info: Worker(
  actor=Actor(RayTrainWorker, f5dcdad6d48144256861465601000000),
  metadata=ActorMetadata(
    hostname='vm',
    node_ip='192.0.2.2',
    pid=344,
  ),
)"""
RAY_OOM_REPORT = """2 worker(s) were killed due to the node running low on memory. Memory on the node (IP: \
192.0.2.2, ID: df9b1df8426ca191705ecd6e1a6748085ea99ec06c1aa340698bc7f9) was 4.40GB used / 23.54GB limit (0.186780)
OOM kill reason: Memory usage 4700090368B exceeded threshold of 4691236864B (18.6% of 25276059648B limit)
Ray killed 2 worker(s) based on the killing policy
Considered workers: [
Selected to kill: (Actor(d0a1611438ef46ec2c56617001000000): job ID=01000000, lease ID=0100, task \
name=AutoscalingCoordinator:_AutoscalingCoordinatorActor.__init__, required resources={}, pid=32741, actual memory \
used=0.11GB, worker ID=3708)
Selected to kill: (Actor(f5dcdad6d48144256861465601000000): job ID=01000000, lease ID=0400, task \
name=RayTrainWorker.__init__, required resources={CPU_group_3ef5: 1}, pid=344, actual memory used=3.16GB, worker \
ID=00f0)
(Actor(0d90d3ad1c8cfd7ed829691101000000): job ID=01000000, lease ID=0000, task name=TrainController.__init__, \
required resources={}, pid=32713, actual memory used=4.50GB, worker ID=868b)
]
Top 10 memory users: PID\tMEM(GB)\tCOMMAND
344\t3.16\tray::RayTrainWorker
32713\t0.11\tray::TrainController.run
Refer to the documentation on how to address the out of memory issue: https://docs.ray.io/en/latest/..."""


def test_ray_s_own_oom_report_names_the_killed_rank_s_memory_and_the_node_s(tmp_path):
    failure = WorkerHealthCheckFailedError(RAY_OOM_WORKER, OutOfMemoryError(RAY_OOM_REPORT))
    explained = str(explain(WorkerGroupError("Training failed", {0: failure}), "big", str(tmp_path)))
    assert ("a worker was killed by Ray's memory monitor: its node ran out of memory (the killed worker, pid 344, "
            "held 3.16 GiB when it was killed; its node had 4.40 GiB used of 23.54 GiB, above Ray's kill threshold "
            "of 18.6% (RAY_memory_usage_threshold))") in explained
    assert "train.batch_size" in explained and "(name=big)" in explained


def test_without_the_failed_rank_s_pid_the_largest_killed_worker_is_named(tmp_path):
    explained = str(explain(OutOfMemoryError(RAY_OOM_REPORT), "big", str(tmp_path)))
    assert "the killed worker, pid 344, held 3.16 GiB" in explained  # not the spared 4.50 GiB one


def test_an_older_ray_s_oom_message_names_the_task_s_memory(tmp_path):
    older = ("Task was killed due to the node running low on memory. Memory on the node (IP: 10.0.0.1, ID: ab12) where "
             "the task (task ID: 9f, name=RayTrainWorker.__init__, pid=77, memory used=2.05GB) was running was "
             "22.80GB / 24.00GB (0.95), which exceeds the memory usage threshold of 0.95.")
    explained = str(explain(OutOfMemoryError(older), "big", str(tmp_path)))
    assert "(the killed worker, pid 77, held 2.05 GiB when it was killed)" in explained


def test_other_failures_are_left_to_ray_s_own_message(tmp_path):
    assert explain(WorkerGroupError("x", {0: ValueError("a bug")}), "r", str(tmp_path)) is None
    assert explain(OSError(errno.EACCES, "Permission denied"), "r", str(tmp_path)) is None


def test_the_cli_prints_a_named_failure_as_one_line_and_exits_1(capsys):
    def fails():
        raise RunFailedError("no space left on the device (/x): No space left on device. ...")

    assert cli.guarded(fails, debug=False) == 1
    err = capsys.readouterr().err
    assert err.startswith("raykit: run failed: no space left on the device (/x)") and "Traceback" not in err
    with pytest.raises(RunFailedError):
        cli.guarded(fails, debug=True)
