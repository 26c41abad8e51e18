"""``raykit.Run.open`` on run and sweep directories written by hand (no Ray, no framework): what it reads
back, checkpoints found where the directory is now, and the errors for what is not a finished run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import raykit
from raykit.history import history_csv
from raykit.run import RunCheckpoint
from raykit.spec import load_spec
from raykit.tuning import SweepResult
from tests.test_report import synthetic_history, write_run, write_sweep


def write_checkpoint(run_dir: Path, epoch: int, history: list[dict]) -> Path:
    """A checkpoint directory with only its manifest (what Run reads; no weights)."""
    path = run_dir / f"checkpoint_epoch={epoch:04d}"
    path.mkdir()
    (path / "manifest.json").write_text(json.dumps({"epoch": epoch, "metrics": history[epoch - 1]}))
    return path


def finished_run(tmp_path: Path) -> tuple[Path, list[dict]]:
    """A run directory as raykit leaves it, whose result.json names checkpoints where the run was written
    first (``/elsewhere/...``): it has been copied here since."""
    history = synthetic_history(epochs=8, best_epoch=6)
    run_dir = write_run(tmp_path / "digits-cnn", history)
    for epoch in (6, 8):
        write_checkpoint(run_dir, epoch, history)
    record = json.loads((run_dir / "result.json").read_text())
    record.update(best_checkpoint="/elsewhere/digits-cnn/checkpoint_epoch=0006", best_metrics=history[5],
                  metrics=history[-1])
    (run_dir / "result.json").write_text(json.dumps(record))
    return run_dir, history


def test_a_run_directory_opens_with_its_spec_metrics_table_checkpoints_and_test_metrics(tmp_path):
    run_dir, history = finished_run(tmp_path)
    run = raykit.Run.open(run_dir)
    assert isinstance(run, raykit.Run) and raykit.TrainResult is raykit.Run
    assert run.spec.name == "digits-cnn" and run.run_dir == str(run_dir)
    assert run.test_accuracy == 0.9612 and run.seconds == 41.5
    frame = run.metrics_dataframe
    assert list(frame["epoch"]) == list(range(1, 9))
    assert frame["val_acc"].tolist() == pytest.approx([row["val_acc"] for row in history])
    assert run.checkpoints == [RunCheckpoint(str(run_dir / f"checkpoint_epoch={e:04d}"), e, history[e - 1])
                               for e in (6, 8)]
    # result.json named the first location; the copy's own checkpoint is what exists now
    assert run.best_checkpoint == str(run_dir / "checkpoint_epoch=0006")
    assert run.best_metrics["epoch"] == 6


def test_a_checkpoint_is_picked_by_epoch_name_or_path_and_a_missing_epoch_lists_the_kept_ones(tmp_path):
    run_dir, _ = finished_run(tmp_path)
    run = raykit.Run.open(run_dir)
    eighth = str(run_dir / "checkpoint_epoch=0008")
    assert run.checkpoint_location() == run.best_checkpoint
    assert run.checkpoint_location(8) == run.checkpoint_location("checkpoint_epoch=0008") == eighth
    assert run.checkpoint_location(run.checkpoints[-1]) == eighth
    assert run.checkpoint_location("/some/other/checkpoint") == "/some/other/checkpoint"
    with pytest.raises(ValueError, match=r"checkpoint=3: .* keeps no checkpoint of epoch 3; accepted: \[6, 8\]"):
        run.load_model(3)


def test_a_directory_that_is_not_a_finished_run_is_refused_naming_it_and_the_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"'.*empty' has no spec.yaml, so it is not a raykit run or sweep; "
                                                r"accepted: a run directory \(spec.yaml, result.json"):
        (tmp_path / "empty").mkdir()
        raykit.Run.open(tmp_path / "empty")
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "spec.yaml").write_text(load_spec(None).to_yaml())
    (unfinished / "metrics.csv").write_text(history_csv(synthetic_history(epochs=2)))
    with pytest.raises(FileNotFoundError, match=r"'.*unfinished' has spec.yaml but no result.json: the run has not "
                                                r"finished"):
        raykit.Run.open(unfinished)
    (unfinished / "trials").mkdir()
    with pytest.raises(FileNotFoundError, match="has spec.yaml but no trials.csv: the sweep has not finished"):
        raykit.Run.open(unfinished)


def test_a_sweep_directory_opens_with_a_run_per_started_trial_the_best_run_and_best_spec(tmp_path):
    sweep_dir = tmp_path / "lr-sweep"
    written = write_sweep(sweep_dir)
    started = written.trials[:3]  # the last trial's sampled values made an invalid spec: it wrote none
    for trial in started:
        spec = load_spec(None, {"name": trial.trial_id, "optim.lr": trial.config["optim.lr"]})
        (sweep_dir / "trials" / trial.trial_id / "spec.yaml").write_text(spec.to_yaml())
    (sweep_dir / "best.yaml").write_text(load_spec(None, {"optim.lr": written.best_trial.config["optim.lr"]}).to_yaml())
    sweep = raykit.Run.open(sweep_dir)
    assert isinstance(sweep, SweepResult)
    assert [run.spec.name for run in sweep.runs] == [trial.trial_id for trial in started]
    assert sweep.best_run.spec.name == written.best_trial.trial_id
    assert sweep.best_run.spec.optim.lr == written.best_trial.config["optim.lr"] == sweep.best_spec.optim.lr
    assert sweep.best_run.metrics_dataframe["val_acc"].tolist() == pytest.approx(
        [row["val_acc"] for row in written.best_trial.history])
    assert sweep.best_run.checkpoints == [] and sweep.best_run.test_metrics == {}
