"""A single-worker run trained in the driver process (scaling.inline): the same checkpoints, retention,
metrics, best checkpoint and test metrics as Ray Train's worker group, and either path continues the
other's run to the same weights."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import raykit
from raykit import inline
from raykit.data import plan_data
from raykit.history import read_history_csv
from raykit.lock import LOCK_FILE
from raykit.spec import SpecError, load_spec
from tests.conftest import wait_for_committed_checkpoint

SMALL = ["scaling.num_workers=1", "model.name=mlp", "train.max_steps_per_epoch=4", "checkpoint.keep_best=2"]
MEASURED = ("epoch_time_s", "samples_per_s", "peak_rss_mb")  # timings and memory: not the same twice
REPO = Path(__file__).resolve().parents[1]


def no_ray_env(tmp_path: Path) -> dict:
    """A fresh shell's environment with its own Ray temp dir: no `raykit up` Ray to find, and a Ray session
    started would leave its directory there."""
    env = {**os.environ, "RAY_TMPDIR": str(tmp_path / "ray-tmp")}
    env.pop("RAY_ADDRESS", None)
    return env


@pytest.fixture
def no_local_ray(monkeypatch):
    """No `raykit up` Ray of another test or user on this machine decides the path."""
    monkeypatch.setattr("raykit.ray.cluster.running_local_ray", lambda: None)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)


def train(storage: str, name: str, epochs: int, path: str, *extra: str):
    return raykit.train(None, [*SMALL, f"train.epochs={epochs}", f"storage={storage}", f"name={name}",
                               f"scaling.inline={path}", *extra], verbose=False)


def checkpoints(run_dir: Path) -> list[str]:
    return sorted(p.name for p in run_dir.glob("checkpoint_epoch=*"))


def weights(checkpoint: Path) -> dict:
    import torch

    manifest = json.loads((checkpoint / "manifest.json").read_text())
    return torch.load(checkpoint / manifest["weights"], map_location="cpu", weights_only=True)


def assert_same_weights(one: Path, other: Path) -> None:
    first, second = weights(one), weights(other)
    assert first.keys() == second.keys()
    for key in first:  # a worker's thread count may round differently: close, not bitwise
        np.testing.assert_allclose(first[key].numpy(), second[key].numpy(), rtol=1e-4, atol=1e-6, err_msg=key)


def assert_same_numbers(one: dict, other: dict) -> None:
    assert one.keys() == other.keys()
    for key, value in one.items():
        if key in MEASURED:
            continue
        if isinstance(value, float):
            assert other[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
        else:
            assert other[key] == value, key


def assert_same_run(inline_dir: Path, group_dir: Path) -> None:
    """Checkpoint names, kept set, Ray's record, metrics.csv and final weights alike."""
    assert checkpoints(inline_dir) == checkpoints(group_dir)
    first, second = (json.loads((d / "checkpoint_manager_snapshot.json").read_text()) for d in (inline_dir, group_dir))
    assert [r["checkpoint_dir_name"] for r in first["checkpoint_results"]] == \
        [r["checkpoint_dir_name"] for r in second["checkpoint_results"]]
    assert first["latest_checkpoint_result"]["checkpoint_dir_name"] == \
        second["latest_checkpoint_result"]["checkpoint_dir_name"]
    rows = [read_history_csv((d / "metrics.csv").read_text()) for d in (inline_dir, group_dir)]
    assert len(rows[0]) == len(rows[1])
    for one, other in zip(*rows):
        assert_same_numbers(one, other)
    for name in checkpoints(inline_dir):
        assert_same_weights(inline_dir / name, group_dir / name)


@pytest.mark.ray
def test_inline_and_worker_group_runs_leave_the_same_run_and_continue_each_other(ray_address, storage,
                                                                                   no_local_ray):
    import ray

    root = Path(storage)
    reference = train(storage, "inline", 3, "on")
    assert not (root / "inline" / "placement").exists()  # no Train worker placed it
    group = train(storage, "group", 3, "off")
    assert (root / "group" / "placement" / "rank0.json").is_file()
    assert_same_run(root / "inline", root / "group")
    assert checkpoints(root / "inline") == ["checkpoint_epoch=0002", "checkpoint_epoch=0003"]  # keep_best=2
    assert Path(reference.best_checkpoint).name == Path(group.best_checkpoint).name
    assert_same_numbers(reference.best_metrics, group.best_metrics)
    assert_same_numbers(reference.test_metrics, group.test_metrics)
    assert reference.test_metrics.keys() == group.test_metrics.keys() and "test_acc" in reference.test_metrics
    timings = json.loads((root / "inline" / "result.json").read_text())["timings"]
    assert "epochs_s" in timings and "ray_start_s" not in timings and "to_worker_process_s" not in timings

    # Stopped after epoch 1, then continued: inline -> worker group, worker group -> inline.
    train(storage, "to_group", 1, "on")
    train(storage, "to_group", 3, "off")
    train(storage, "to_inline", 1, "off")
    train(storage, "to_inline", 3, "on")
    for name in ("to_group", "to_inline"):
        assert_same_run(root / "inline", root / name)
    assert ray.is_initialized()  # (the fixture's Ray, which the inline runs left alone)


def test_an_inline_run_stopped_after_epoch_one_resumes_to_the_same_weights(storage, no_local_ray):
    root = Path(storage)
    train(storage, "whole", 3, "on")
    train(storage, "resumed", 1, "on")
    assert checkpoints(root / "resumed") == ["checkpoint_epoch=0001"]
    result = train(storage, "resumed", 3, "on")
    assert [row["epoch"] for row in result.history] == [1, 2, 3]
    assert_same_run(root / "whole", root / "resumed")


def test_tied_epochs_keep_and_name_best_what_ray_would(storage, no_local_ray, monkeypatch):
    # As tests/test_train_ray.py's tied-epochs test for Ray: val_acc ties in all three epochs; Ray keeps
    # the best 2 (a tie ranks the later report higher, so epoch 1 goes) and names the first of those best.
    monkeypatch.setattr(inline, "evaluate", lambda *a: pytest.fail("the best checkpoint was not evaluated as trained"))
    result = train(storage, "tied", 3, "on", "optim.lr=1e-12")
    assert len({row["val_acc"] for row in result.history}) == 1
    assert checkpoints(Path(storage) / "tied") == ["checkpoint_epoch=0002", "checkpoint_epoch=0003"]
    assert Path(result.best_checkpoint).name == "checkpoint_epoch=0002"


def test_a_damaged_latest_checkpoint_resumes_inline_from_the_one_before(storage, no_local_ray):
    root = Path(storage)
    train(storage, "damaged", 2, "on", "checkpoint.keep_best=3")
    weights_file = next((root / "damaged" / "checkpoint_epoch=0002").glob("*.pt"))
    weights_file.write_bytes(weights_file.read_bytes()[:-10])
    result = train(storage, "damaged", 3, "on", "checkpoint.keep_best=3")
    assert [row["epoch"] for row in result.history] == [1, 2, 3]
    # The damaged directory is still in the record under its name: epoch 2 trained again goes beside it.
    assert "checkpoint_epoch=0002.1" in checkpoints(root / "damaged")


def test_scaling_inline_on_is_refused_naming_what_needs_the_worker_group(storage, no_local_ray):
    with pytest.raises(SpecError, match=r"scaling\.inline.*num_workers is 2"):
        raykit.train(None, ["scaling.num_workers=2", "scaling.inline=on", f"storage={storage}", "name=two"])
    assert not (Path(storage) / "two").exists()  # refused before anything started


def test_auto_takes_the_worker_group_whenever_something_needs_it(no_local_ray, monkeypatch):
    # (auto with nothing in the way trains inline: the fresh process below, and the CLI's interrupt test.)
    spec = load_spec(None, SMALL)
    plan = plan_data(spec.data)
    with_ = lambda *overrides: load_spec(None, [*SMALL, *overrides])  # noqa: E731
    assert inline.refusals(spec, plan) == []
    assert "scaling.num_workers is 2" in inline.refusals(with_("scaling.num_workers=2"), plan)[0]
    assert "scaling.max_failures is 1" in inline.refusals(with_("scaling.max_failures=1"), plan)[0]
    assert "a Ray address is given" in inline.refusals(spec, plan, address="ray://head:10001")[0]
    assert not inline.chosen(with_("scaling.inline=off"), plan)
    assert not inline.chosen(with_("scaling.num_workers=2"), plan)
    monkeypatch.setattr("raykit.ray.cluster.running_local_ray", lambda: "127.0.0.1:6379")
    assert not inline.chosen(spec, plan)
    with pytest.raises(SpecError, match="a local Ray is running"):
        inline.chosen(with_("scaling.inline=on"), plan)


def test_the_inline_path_neither_starts_nor_imports_ray_train(tmp_path):
    code = ("import sys, raykit; raykit.train(None, {sm}, verbose=False); import ray; "
            "print('ray.train' in sys.modules, ray.is_initialized())").format(
        sm=[*SMALL, "train.epochs=1", f"storage={tmp_path / 'runs'}", "name=quiet"])
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=no_ray_env(tmp_path), capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "False False"
    assert not list((tmp_path / "ray-tmp").glob("**/session_*"))
    assert (tmp_path / "runs" / "quiet" / "checkpoint_epoch=0001" / "manifest.json").is_file()


def test_sigterm_then_ctrl_c_stop_an_inline_run_and_the_printed_command_resumes_it(tmp_path):
    run_dir = tmp_path / "runs" / "sig"
    args = ["train", "--set", f"storage={tmp_path / 'runs'}", "--set", "name=sig", "--set", "train.epochs=3",
            *[item for override in SMALL for item in ("--set", override)]]

    def start(arguments: list[str], sleep_after_epoch: int) -> subprocess.Popen:
        fault = [{"at": "after_report", "epoch": sleep_after_epoch, "rank": 0, "action": "sleep", "seconds": 300}]
        return subprocess.Popen([sys.executable, "-m", "raykit.cli", *arguments], cwd=REPO, text=True,
                                env={**no_ray_env(tmp_path), "RAYKIT_FAULTS": json.dumps(fault)},
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)

    def stop(driver: subprocess.Popen, signum: int) -> str:
        driver.send_signal(signum)
        try:
            return driver.communicate(timeout=120)[0]
        except subprocess.TimeoutExpired:
            os.killpg(driver.pid, signal.SIGKILL)
            raise

    driver = start(args, sleep_after_epoch=1)
    wait_for_committed_checkpoint(run_dir, "checkpoint_epoch=0001", driver, timeout=120)
    output = stop(driver, signal.SIGTERM)
    assert driver.returncode == 143 and "training inline" in output, output[-3000:]
    assert "Traceback" not in output and not (run_dir / LOCK_FILE).exists()
    line = next(line for line in output.splitlines() if line.startswith("raykit: interrupted by SIGTERM"))
    resume = shlex.split(line.split("resume the run with the same name: ", 1)[1])
    assert resume[:2] == ["raykit", "train"] and "name=sig" in resume

    driver = start(resume[1:], sleep_after_epoch=2)
    wait_for_committed_checkpoint(run_dir, "checkpoint_epoch=0002", driver, timeout=120)
    assert json.loads((run_dir / LOCK_FILE).read_text())["pid"] == driver.pid  # the run's lock, held inline too
    output = stop(driver, signal.SIGINT)
    assert driver.returncode == 130, output[-3000:]
    assert "raykit: interrupted by SIGINT; resume the run with the same name: raykit train" in output
    assert "resuming after epoch 1" in output and "Traceback" not in output
    assert not list((tmp_path / "ray-tmp").glob("**/session_*"))


def test_the_test_evaluation_reads_the_splits_the_loop_held_not_the_files(tmp_path, no_local_ray, decoded_images):
    """Every image is decoded once in a run: a plan decodes one per source, the loop each split once, and
    the test evaluation of the best checkpoint reads the split the loop held. Its metrics are those of the
    checkpoint evaluated from the files, and the class names of the data reach the checkpoint and the
    per-class columns on both splits."""
    from raykit.resume import evaluate_stored_checkpoint
    from tests import data_factory as make

    x, y = make.images(120, classes=4)
    uri = make.write_image_folder(str(tmp_path / "folder"), x, y)  # classes ant, bee, cat, dog
    decoded = decoded_images
    result = raykit.train(None, ["scaling.num_workers=1", "scaling.inline=on", "model.name=mlp", "model.hidden=[16]",
                                 "train.epochs=2",
                                 f"data.uri={uri}", "data.val_fraction=0.25", "data.test_fraction=0.25",
                                 "train.metrics=[per_class_acc]", f"storage={tmp_path}", "name=once"], verbose=False)
    assert len(decoded) == 2 + 120, len(decoded)  # a plan's first image (the driver's, the loop's), each image once
    decoded.clear()
    from_files = evaluate_stored_checkpoint(load_spec(str(tmp_path / "once" / "spec.yaml")), result.best_checkpoint,
                                            "test")
    assert decoded  # (that one did read the files)
    assert_same_numbers({k: v for k, v in result.test_metrics.items() if k != "checkpoint"}, from_files)
    assert "test_acc/cat" in from_files and "val_acc/cat" in result.history[-1]
    manifest = json.loads((Path(result.best_checkpoint) / "manifest.json").read_text())
    assert manifest["state"]["class_names"] == ["ant", "bee", "cat", "dog"]
