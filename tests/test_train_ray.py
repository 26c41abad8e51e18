"""The default job end to end on the session's Ray: Python API, CLI, resume, and errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import raykit
from raykit.history import read_history_csv
from raykit.spec import SpecError, load_spec
from tests.conftest import evaluated_on_rank_zero, run_cli

DEFAULT_JOB = "jobs/configs/digits_cnn_torch.yaml"
pytestmark = pytest.mark.ray


def assert_run_directory(run_dir: Path, epochs: list[int]) -> None:
    """The files every run leaves: resolved spec, metrics CSV, curves PNG, result, checkpoints."""
    spec = load_spec(run_dir / "spec.yaml")
    assert spec.name == run_dir.name and Path(spec.storage) == run_dir.parent
    history = read_history_csv((run_dir / "metrics.csv").read_text())
    assert [row["epoch"] for row in history] == epochs
    assert (run_dir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = json.loads((run_dir / "result.json").read_text())
    assert Path(result["best_checkpoint"]).parent == run_dir
    checkpoints = sorted(p.name for p in run_dir.glob("checkpoint_epoch=*"))
    assert checkpoints and all((run_dir / c / "manifest.json").is_file() for c in checkpoints)


def test_default_job_through_python_api_then_resume_by_name(ray_address, storage, monkeypatch):
    evaluated_on_rank_zero(monkeypatch)
    result = raykit.train(DEFAULT_JOB, ["train.epochs=2", f"storage={storage}", "name=api-run"])
    run_dir = Path(storage) / "api-run"
    assert Path(result.run_dir) == run_dir
    assert_run_directory(run_dir, [1, 2])
    assert result.test_accuracy > 0.5  # chance is 0.1
    assert result.best_checkpoint and Path(result.best_checkpoint).is_dir()
    assert result.best_metrics["val_acc"] == max(row["val_acc"] for row in result.history)

    # The same name continues the run: only epoch 3 is trained, the history has no gap or repeat.
    again = raykit.train(DEFAULT_JOB, ["train.epochs=3", f"storage={storage}", "name=api-run"])
    assert [row["epoch"] for row in again.history] == [1, 2, 3]
    assert again.history[:2] == result.history
    assert again.history[2]["global_step"] == 3 * again.history[0]["global_step"]
    assert_run_directory(run_dir, [1, 2, 3])


def test_tied_epochs_rank_zero_evaluates_ray_s_pick_and_a_reused_name_is_refused(ray_address, storage,
                                                                                   monkeypatch):
    # A learning rate below float32 resolution leaves the weights as they are: val_acc ties in all three
    # epochs. Ray keeps the best 2 (a tie ranks the later report higher, so epoch 1 goes) and names the
    # first of those best: epoch 2. Rank 0 must replay that choice (the task fallback is an error here).
    evaluated_on_rank_zero(monkeypatch)
    result = raykit.train(None, ["train.epochs=3", f"storage={storage}", "name=taken", "scaling.num_workers=1",
                                 "model.name=mlp", "optim.lr=1e-12", "checkpoint.keep_best=2"])
    assert len({row["val_acc"] for row in result.history}) == 1
    assert Path(result.best_checkpoint).name == "checkpoint_epoch=0002"
    assert sorted(p.name for p in Path(result.run_dir).glob("checkpoint_epoch=*")) == \
        ["checkpoint_epoch=0002", "checkpoint_epoch=0003"]
    from raykit.engine import evaluate_checkpoint

    assert result.test_metrics == evaluate_checkpoint(result.spec, result.best_checkpoint, "test")

    # The name is now taken by an mlp run: a cnn under it is refused before Ray runs.
    with pytest.raises(SpecError) as info:
        raykit.train(None, ["train.epochs=1", f"storage={storage}", "name=taken", "model.name=cnn"])
    assert info.value.fields == ["name"] and "model.name" in str(info.value)


def test_asking_for_more_than_the_cluster_has_fails_before_launch(ray_address, storage):
    from raykit.ray.cluster import ResourceError

    with pytest.raises(ResourceError, match="GPU"):
        raykit.train(None, [f"storage={storage}", "scaling.use_gpu=true"])
    with pytest.raises(ResourceError, match="CPU"):
        raykit.train(None, [f"storage={storage}", "scaling.num_workers=4"])


@pytest.mark.slow
def test_default_job_through_the_cli_reaches_the_acceptance_accuracy(ray_address, storage):
    # The whole default job (20 epochs, 2 workers), as `make run` runs it. (jobs/train.py runs the same
    # CLI code under `ray job submit`: tests/test_jobs_ray.py.)
    out = run_cli(["-m", "raykit.cli", "train", DEFAULT_JOB, "--set", f"storage={storage}", "--set", "name=cli-run",
                   "--address", ray_address])
    assert out.returncode == 0, out.stderr[-3000:]
    assert "epoch  20/20" in out.stdout and "val_acc" in out.stdout and "eta" in out.stdout
    assert "test accuracy:" in out.stdout and "best checkpoint:" in out.stdout
    assert f"run directory:   {Path(storage) / 'cli-run'}" in out.stdout
    assert_run_directory(Path(storage) / "cli-run", list(range(1, 21)))
    spec = load_spec(Path(storage) / "cli-run" / "spec.yaml")
    assert spec.train.epochs == 20 and spec.scaling.num_workers == 2
    assert json.loads((Path(storage) / "cli-run" / "result.json").read_text())["test_metrics"]["test_acc"] >= 0.97
