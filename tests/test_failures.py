"""Why a run failed, in the user's terms (raykit.failures): a full disk and a worker killed for memory, found
inside the errors Ray Train raises, and passed through the CLI as one message."""

from __future__ import annotations

import errno

import pytest
from ray.exceptions import OutOfMemoryError, RayTaskError
from ray.train import WorkerGroupError

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
