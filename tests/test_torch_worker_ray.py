"""The PyTorch worker under TorchTrainer: resume after the driver is killed (from a damaged latest
checkpoint), after five seeded worker kills (chaos) and after a full disk, checkpoints complete in storage
when a run ends, best-K retention, export, and 2 workers vs 1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import blake3
import numpy as np
import pytest
import torch

import raykit
from raykit import faults
from raykit.checkpoint import read_manifest
from raykit.failures import RunFailedError
from tests.conftest import REPO, evaluated_on_rank_zero, wait_for_committed_checkpoint

DEFAULT_JOB = "jobs/configs/digits_cnn_torch.yaml"
pytestmark = pytest.mark.ray


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    latest = max(run_dir.glob("checkpoint_epoch=*"))
    return torch.load(latest / "model.pt", weights_only=True)


@pytest.fixture(scope="module")
def straight(ray_address, tmp_path_factory):
    """An uninterrupted 4-epoch run of the default job, the reference for the interrupted ones."""
    storage = tmp_path_factory.mktemp("straight")
    return raykit.train(DEFAULT_JOB, ["train.epochs=4", f"storage={storage}", "checkpoint.keep_best=1",
                                      "name=straight"])


def assert_same_run(resumed, straight) -> None:
    """Same epochs, steps and metrics, and final weights equal within 1e-6."""
    assert [row["epoch"] for row in resumed.history] == [1, 2, 3, 4]
    assert [row["global_step"] for row in resumed.history] == [row["global_step"] for row in straight.history]
    for ours, theirs in zip(resumed.history, straight.history):
        assert ours["val_acc"] == pytest.approx(theirs["val_acc"], abs=1e-9)
    expected = final_weights(Path(straight.run_dir))
    got = final_weights(Path(resumed.run_dir))
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=0, atol=1e-6)


def test_killed_driver_then_a_damaged_latest_checkpoint_resume_to_the_same_weights(straight, ray_address, storage,
                                                                                 monkeypatch):
    # keep_best=2 keeps epochs 1 and 2 here (straight keeps 1; retention does not touch the weights).
    common = ["train.epochs=4", f"storage={storage}", "checkpoint.keep_best=2", "name=killed"]

    # A second driver trains the same spec; its rank 0 sleeps after epoch 2's report, and we kill the driver
    # (and so its Train controller and workers) once epoch 2's checkpoint is committed.
    fault = [{"at": "after_report", "epoch": 2, "rank": 0, "action": "sleep", "seconds": 300}]
    args = [sys.executable, "-m", "raykit.cli", "train", DEFAULT_JOB, "--address", ray_address]
    for override in common:
        args += ["--set", override]
    driver = subprocess.Popen(args, cwd=REPO, env={**os.environ, "RAYKIT_FAULTS": json.dumps(fault)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    run_dir = Path(storage) / "killed"
    try:
        wait_for_committed_checkpoint(run_dir, "checkpoint_epoch=0002", driver, timeout=240)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    assert not (run_dir / "checkpoint_epoch=0003").exists()

    # Then the latest checkpoint is damaged (its weights truncated): the resume falls back to epoch 1, the
    # newest checkpoint that verifies, trains epoch 2 again, then 3 and 4. Ray still holds the damaged one
    # and deletes its path when its retention drops it, so the new epoch 2 is written beside it, not over it.
    latest = run_dir / "checkpoint_epoch=0002" / "model.pt"
    latest.write_bytes(latest.read_bytes()[:-100])
    evaluated_on_rank_zero(monkeypatch)  # rank 0 replays Ray's ranking across the resume (the task is an error)
    resumed = raykit.train(DEFAULT_JOB, common)
    assert_same_run(resumed, straight)
    assert resumed.best_metrics["val_acc"] == max(row["val_acc"] for row in resumed.history)
    assert resumed.test_accuracy > 0.9
    kept = sorted(p.name for p in run_dir.glob("checkpoint_epoch=*"))
    for name in kept:
        if name != "checkpoint_epoch=0002":  # the damaged one, if Ray's ranking still keeps it
            read_manifest(str(run_dir / name))
    assert "checkpoint_epoch=0004" in kept and Path(resumed.best_checkpoint).name in kept
    assert Path(resumed.best_checkpoint).name != "checkpoint_epoch=0002"


def assert_complete_in_storage(run_dir: str) -> None:
    """Every checkpoint in the run directory verifies, its manifest's digests are a fresh SHA-256 of its
    files, and it holds no file the manifest does not list."""
    directories = sorted(Path(run_dir).glob("checkpoint_epoch=*"))
    assert directories
    for directory in directories:
        manifest = read_manifest(directory)
        on_disk = {p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file()}
        assert on_disk == set(manifest["files"]) | {"manifest.json"}
        for name, entry in manifest["files"].items():
            assert blake3.blake3((directory / name).read_bytes()).hexdigest() == entry["blake3"], directory / name


def test_every_checkpoint_is_complete_in_storage_when_the_run_returns(straight):
    # Uploaded asynchronously while training went on; the run returns only once all are there.
    assert_complete_in_storage(straight.run_dir)


# Chaos: a seeded plan of worker kills (replay a failing plan with RAYKIT_CHAOS_SEED=<seed>). Seed 6 kills at
# every kind of point: rank 1 mid-epoch 3, rank 0 mid-epoch 2, rank 0 while epoch 3's checkpoint uploads (its
# weights file in storage, not the rest; Ray has not registered it, so the run restarts from epoch 2's and
# writes epoch 3 again over the partial one), rank 0 between the files of epoch 1's and of epoch 4's checkpoint.
CHAOS_SEED = int(os.environ.get("RAYKIT_CHAOS_SEED", "6"))


def test_a_run_whose_workers_are_killed_five_times_at_seeded_points_ends_with_the_same_weights(
        straight, storage, tmp_path, monkeypatch):
    # The last upload is also slow: rank 0 must wait for it before evaluating that checkpoint, the best by
    # training loss (the driver's fallback evaluation is an error here).
    plan = faults.chaos_plan(CHAOS_SEED, kills=5, epochs=4, world_size=2, marker_dir=str(tmp_path))
    monkeypatch.setenv("RAYKIT_FAULTS", json.dumps([*plan, {"at": "during_upload", "epoch": 4, "action": "sleep",
                                                            "seconds": 1}]))
    evaluated_on_rank_zero(monkeypatch)
    resumed = raykit.train(DEFAULT_JOB, ["train.epochs=4", f"storage={storage}", "checkpoint.keep_best=2",
                                         "checkpoint.monitor=train_loss", "checkpoint.mode=min",
                                         "scaling.max_failures=-1", "name=chaos"])
    assert faults.kills_fired(plan) == 5, f"seed {CHAOS_SEED}: {plan}"  # each kill really happened, once
    assert_same_run(resumed, straight)
    assert Path(resumed.best_checkpoint).name == "checkpoint_epoch=0004" and resumed.test_accuracy > 0.9
    assert_complete_in_storage(resumed.run_dir)  # no half-written checkpoint remains


def test_a_full_disk_while_writing_a_checkpoint_fails_clearly_and_the_resume_continues(straight, storage,
                                                                                       monkeypatch):
    # Rank 0's disk fills up after epoch 3's weights file: the run fails saying so, epoch 2's checkpoint
    # stays complete and registered, and a resume once space is free ends as the uninterrupted run.
    common = ["train.epochs=4", f"storage={storage}", "checkpoint.keep_best=4", "name=disk-full"]
    monkeypatch.setenv("RAYKIT_FAULTS", json.dumps([{"at": "between_checkpoint_files", "epoch": 3,
                                                     "action": "enospc"}]))
    partial = set(Path(tempfile.gettempdir()).glob("raykit-ckpt-0003-*"))  # left by other runs' killed workers
    with pytest.raises(RunFailedError, match=r"no space left on the device .*resume with the same name "
                                             r"\(name=disk-full\)"):
        raykit.train(DEFAULT_JOB, common)
    run_dir = Path(storage) / "disk-full"
    assert sorted(p.name for p in run_dir.glob("checkpoint_epoch=*")) == ["checkpoint_epoch=0001",
                                                                          "checkpoint_epoch=0002"]
    read_manifest(run_dir / "checkpoint_epoch=0002")  # complete: every file verifies
    assert set(Path(tempfile.gettempdir()).glob("raykit-ckpt-0003-*")) == partial  # the partial one was removed
    monkeypatch.delenv("RAYKIT_FAULTS")
    assert_same_run(raykit.train(DEFAULT_JOB, common), straight)


def test_best_k_retention_and_the_exported_best_model(straight):
    # Best-K retention (keep_best=1): the best checkpoint and the latest (which a resume needs) remain.
    best_epoch = max(straight.history, key=lambda row: (row["val_acc"], -row["epoch"]))["epoch"]
    kept = sorted(p.name for p in Path(straight.run_dir).glob("checkpoint_epoch=*"))
    assert kept == sorted({f"checkpoint_epoch={best_epoch:04d}", "checkpoint_epoch=0004"})
    # The exported best model is named by the template and holds that checkpoint's weights.
    best = straight.best_metrics
    exported = Path(straight.run_dir) / "export" / f"{best['epoch']:02d}-{best['val_acc']:.2f}.pt"
    assert Path(straight.exported_model) == exported
    assert torch.equal(torch.load(exported, weights_only=True)["0.weight"],
                       torch.load(Path(straight.best_checkpoint) / "model.pt", weights_only=True)["0.weight"])


def test_the_run_reopens_from_its_directory_and_its_model_predicts_as_raykit_predict(straight, tmp_path):
    import pandas.testing

    from raykit.engine import softmax
    from tests.test_predict_ray import read_predictions

    run = raykit.Run.open(straight.run_dir)
    assert run.spec == straight.spec and run.test_metrics == straight.test_metrics
    assert run.best_checkpoint == straight.best_checkpoint and run.exported_model == straight.exported_model
    pandas.testing.assert_frame_equal(run.metrics_dataframe, straight.metrics_dataframe)
    assert list(run.metrics_dataframe["epoch"]) == [1, 2, 3, 4]
    kept = sorted(int(p.name.split("=")[1]) for p in Path(straight.run_dir).glob("checkpoint_epoch=*"))
    assert [c.epoch for c in run.checkpoints] == kept
    assert [c.metrics["val_acc"] for c in run.checkpoints] == [straight.history[e - 1]["val_acc"] for e in kept]

    raykit.predict(run.best_checkpoint, "digits", str(tmp_path / "preds"), verbose=False)
    predicted = read_predictions(str(tmp_path / "preds"))
    model = run.load_model()
    assert isinstance(model, torch.nn.Module) and not model.training
    with torch.no_grad():
        logits = model(torch.from_numpy(model.preprocess("digits"))).numpy()
    assert logits.shape == (1797, 10) and (logits.argmax(1) == predicted["prediction"]).all()
    probabilities = np.stack([predicted[f"p_{name}"] for name in model.class_names], axis=1)
    np.testing.assert_allclose(softmax(logits.astype(np.float64)), probabilities, atol=1e-5)
    with torch.no_grad():  # the result raykit.train returned loads the same model
        np.testing.assert_allclose(straight.load_model()(torch.from_numpy(model.preprocess("digits"))).numpy(),
                                   logits, atol=1e-6)


def test_two_workers_reach_the_accuracy_band_of_one(straight, storage):
    assert straight.spec.scaling.num_workers == 2
    single = raykit.train(DEFAULT_JOB, ["train.epochs=4", f"storage={storage}", "checkpoint.keep_best=1",
                                        "scaling.num_workers=1", "name=w1"])
    one, two = single.history[-1]["val_acc"], straight.history[-1]["val_acc"]
    assert one > 0.9 and two > 0.9 and abs(one - two) <= 0.05
