"""Ray Tune sweeps on the session's 2-CPU Ray: ASHA, the 2-worker deadlock case, invalid trials, PBT,
Optuna, resume after interruption, retraining best.yaml, and a sweep whose trials are killed (chaos)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import raykit
from raykit import faults
from raykit.spec import load_spec
from tests.conftest import REPO

DEFAULT_JOB = "jobs/configs/digits_cnn_torch.yaml"
pytestmark = pytest.mark.ray


def test_asha_sweep_of_single_worker_trials_picks_the_best_and_best_yaml_retrains(ray_address, storage):
    result = raykit.tune(DEFAULT_JOB, {"optim.lr": {"loguniform": [1e-4, 1e-2]}},
                         [f"storage={storage}", "name=asha", "scaling.num_workers=1", "train.epochs=3",
                          "tune.num_samples=4", "tune.scheduler=asha"])
    sweep = Path(storage) / "asha"
    assert len(result.trials) == 4 and all(t.status == "TERMINATED" for t in result.trials)
    assert result.best_trial.best_metric == max(t.best_metric for t in result.trials)
    assert min(t.epochs for t in result.trials) < 3  # ASHA stopped someone early
    for trial in result.trials:  # the searched value reached the worker's own spec
        assert load_spec(sweep / "trials" / trial.trial_id / "spec.yaml").optim.lr == trial.config["optim.lr"]
    rows = list(csv.DictReader((sweep / "trials.csv").open()))
    assert len(rows) == 4 and {"trial_id", "status", "optim.lr", "best_val_acc"} <= set(rows[0])
    assert (sweep / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    best = load_spec(sweep / "best.yaml")
    assert best.optim.lr == result.best_trial.config["optim.lr"] and best.name is None
    # Tune's ResultGrid comes with the result and with the sweep reopened from its directory, which gives
    # each trial back as a Run.
    assert sorted(Path(r.path).name for r in result.result_grid) == sorted(t.trial_id for t in result.trials)
    reopened = raykit.Run.open(sweep)
    assert [run.spec.name for run in reopened.runs] == [t.trial_id for t in result.trials]
    assert reopened.best_run.spec.name == result.best_run.spec.name == result.best_trial.trial_id
    assert reopened.best_run.best_checkpoint == result.best_checkpoint
    assert reopened.best_run.best_metrics[result.metric] == result.best_trial.best_metric
    kept = reopened.best_run.checkpoints  # in Tune's trial directory, each with raykit's manifest
    assert kept and [c.path for c in kept] == [c.path for c in result.best_run.checkpoints]
    assert result.best_checkpoint in [c.path for c in kept]
    assert len(reopened.best_run.metrics_dataframe) == result.best_trial.epochs
    assert sorted(r.metrics["trial_id"] for r in reopened.result_grid) == sorted(t.trial_id for t in result.trials)
    assert reopened.best_run.load_model().class_names == [str(c) for c in range(10)]
    retrained = raykit.train(sweep / "best.yaml", ["train.epochs=1"])
    assert retrained.spec.optim.lr == best.optim.lr and Path(retrained.run_dir).parent == Path(storage)


def test_two_worker_trials_of_a_torchvision_model_finish_and_an_invalid_trial_errors_alone(ray_address, storage):
    # Each trial drives a 2-worker Train run on this 2-CPU Ray: trials must hold no CPU and run one at
    # a time, or they starve their own workers forever. batch_size 3 cannot be split over 2 workers.
    # The model is a torchvision zoo model with model.kwargs: a zoo model trains an epoch on 2 workers.
    result = raykit.tune(DEFAULT_JOB, {"train.batch_size": {"grid": [64, 3]}},
                         [f"storage={storage}", "name=two-workers", "train.epochs=1", "tune.max_failures=0",
                          "model.name=torchvision:mobilenet_v3_small", "model.kwargs={dropout: 0.1}",
                          "train.max_steps_per_epoch=4"])
    status = {t.config["train.batch_size"]: t for t in result.trials}
    assert status[64].status == "TERMINATED" and status[64].epochs == 1
    assert status[3].status == "ERROR" and "train.batch_size" in status[3].error
    assert result.best_trial is status[64]
    run = result.best_run
    assert run.spec.model.kwargs == {"dropout": 0.1} and run.history[0]["train_loss"] > 0
    import torch

    weights = torch.load(Path(status[64].checkpoint) / "model.pt", weights_only=True)
    assert weights["classifier.3.weight"].shape == (10, 1024)  # digits: 10 classes
    assert weights["features.0.0.weight"].shape[1] == 1  # the first conv takes the gray images


def test_pbt_exploit_loads_the_better_trials_checkpoint(ray_address, storage):
    result = raykit.tune(DEFAULT_JOB, {"optim.lr": {"grid": [3e-3, 1e-5]}},
                         [f"storage={storage}", "name=pbt", "scaling.num_workers=1", "train.epochs=4",
                          "tune.scheduler=pbt", "tune.perturbation_interval=2"])
    sweep = Path(storage) / "pbt"
    exploits = []
    for trial in result.trials:
        log = sweep / "trials" / trial.trial_id / "restores.jsonl"
        for line in log.read_text().splitlines() if log.exists() else []:
            entry = json.loads(line)
            if Path(entry["checkpoint"]).parent.name != trial.trial_id:
                exploits.append(entry)
    assert exploits, "no trial was restored from another trial's checkpoint"
    for entry in exploits:  # the weights loaded are exactly the donor checkpoint's
        manifest = json.loads((Path(entry["checkpoint"]) / "manifest.json").read_text())
        assert entry["weights_checksum"] == "blake3:" + manifest["files"]["model.pt"]["blake3"]


def test_optuna_and_hyperband(ray_address, storage):
    result = raykit.tune(DEFAULT_JOB, {"optim.lr": {"loguniform": [1e-4, 1e-2]}},
                         [f"storage={storage}", "name=optuna", "scaling.num_workers=1", "train.epochs=2",
                          "tune.num_samples=2", "tune.searcher=optuna", "tune.scheduler=hyperband"])
    assert len(result.trials) == 2 and result.best_trial is not None


def test_interrupted_sweep_resumes_without_redoing_finished_trials(ray_address, storage):
    args = [sys.executable, "-m", "raykit.cli", "tune", DEFAULT_JOB, "--address", ray_address]
    for override in [f"storage={storage}", "name=resumable", "scaling.num_workers=1",
                     "tune.max_concurrent_trials=1", "tune.search_space={train.epochs: {grid: [1, 25]}}"]:
        args += ["--set", override]
    driver = subprocess.Popen(args, cwd=REPO, env={**os.environ, "TUNE_GLOBAL_CHECKPOINT_S": "0.5"},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    trials = Path(storage) / "resumable" / "trials"
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline:  # the 1-epoch trial is done and the 25-epoch one is under way
            long_runs = [p for p in trials.glob("*/metrics.csv") if p.read_text().count("\n") >= 6]
            if long_runs:
                break
            assert driver.poll() is None, driver.stdout.read()[-3000:]
            time.sleep(0.2)
        else:
            raise AssertionError("the long trial never got going")
        time.sleep(1.0)  # let Tune write its experiment state
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    short = next(p for p in trials.glob("*/metrics.csv") if p.read_text().count("\n") == 2)
    short_written = short.stat().st_mtime_ns

    result = raykit.tune(DEFAULT_JOB, overrides=[f"storage={storage}", "name=resumable", "scaling.num_workers=1",
                                                 "tune.max_concurrent_trials=1",
                                                 "tune.search_space={train.epochs: {grid: [1, 25]}}"])
    assert sorted(t.epochs for t in result.trials) == [1, 25]
    assert all(t.status == "TERMINATED" for t in result.trials)
    assert short.stat().st_mtime_ns == short_written  # the finished trial was not trained again


def sweep_weights(trial) -> dict:
    return torch.load(Path(trial.checkpoint) / "model.pt", weights_only=True)


def test_a_sweep_whose_trials_are_killed_three_times_ends_as_an_uninterrupted_one(ray_address, storage, tmp_path,
                                                                                 monkeypatch):
    # Seeded kills of inline trials (replay another plan with RAYKIT_CHAOS_SEED): each kill ends a trial's
    # process at once; Tune retries that trial from its own latest checkpoint while the others go on. Every
    # trial must end with the history and weights of the same sweep run without kills.
    space = {"optim.lr": {"grid": [1e-3, 2e-3, 3e-3, 4e-3]}}
    common = [f"storage={storage}", "scaling.num_workers=1", "train.epochs=2", "tune.max_failures=3",
              "tune.max_concurrent_trials=2"]
    straight = raykit.tune(DEFAULT_JOB, space, [*common, "name=straight-sweep"])
    seed = int(os.environ.get("RAYKIT_CHAOS_SEED", "3"))
    plan = faults.chaos_plan(seed, kills=3, epochs=2, world_size=1, marker_dir=str(tmp_path),
                             points=("mid_epoch", "after_report", "between_checkpoint_files"))
    monkeypatch.setenv("RAYKIT_FAULTS", json.dumps(plan))
    result = raykit.tune(DEFAULT_JOB, space, [*common, "name=killed-sweep"])
    assert faults.kills_fired(plan) == 3, f"seed {seed}: {plan}"
    assert [t.status for t in result.trials] == ["TERMINATED"] * 4 and all(t.epochs == 2 for t in result.trials)
    restores = [line for t in result.trials
                for path in [Path(storage) / "killed-sweep" / "trials" / t.trial_id / "restores.jsonl"]
                if path.exists() for line in path.read_text().splitlines()]
    # A kill before a trial's first checkpoint restarts it from scratch (nothing to restore): at most 3.
    assert len(restores) <= 3 and all(json.loads(line)["epoch"] >= 1 for line in restores)
    by_lr = {t.config["optim.lr"]: t for t in straight.trials}
    for trial in result.trials:
        reference = by_lr[trial.config["optim.lr"]]
        for ours, theirs in zip(trial.history, reference.history, strict=True):
            assert ours["train_loss"] == pytest.approx(theirs["train_loss"], abs=1e-9)
            assert ours["val_acc"] == pytest.approx(theirs["val_acc"], abs=1e-9)
        assert Path(trial.checkpoint).name == Path(reference.checkpoint).name
        expected = sweep_weights(reference)
        for key, value in sweep_weights(trial).items():
            torch.testing.assert_close(value, expected[key], rtol=0, atol=1e-6)
