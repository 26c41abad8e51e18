"""Tracking and the forwarded environment on the session's Ray: a Train run and a sweep log to W&B
(offline) and MLflow (file store) from inside their workers and trials, with the same numbers as each
run's metrics.csv, and the driver's forwarded variables and the spec's scaling.env_vars reach those
workers while the rest of the driver's environment does not. Ray's workers started before these
variables were set, so they can only get them through raykit's forwarding."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import raykit
from tests.test_sinks import assert_wandb_history_is_metrics_csv, wandb_runs

pytestmark = pytest.mark.ray
PROBE = "model.name=tests.backends.user_models:env_probe"
TINY = ["scaling.num_workers=1", "train.epochs=1", "train.max_steps_per_epoch=2", "train.batch_size=32",
        "data.val_fraction=0.05", "data.test_fraction=0.05", PROBE]


@pytest.fixture
def tracked(tmp_path, monkeypatch) -> dict:
    """The driver's environment for a tracked run (W&B offline, MLflow file store) with a probe."""
    pytest.importorskip("wandb")
    pytest.importorskip("mlflow")
    paths = {name: tmp_path / name for name in ("wandb-files", "probe", "wandb-config", "mlruns")}
    for path in paths.values():
        path.mkdir()
    for name, value in {"WANDB_MODE": "offline", "WANDB_DIR": paths["wandb-files"], "WANDB_SILENT": "true",
                        "WANDB_CONFIG_DIR": paths["wandb-config"], "MLFLOW_ALLOW_FILE_STORE": "true",
                        "RAYKIT_TEST_ENV_PROBE": paths["probe"], "HF_HOME": "/from-driver",
                        "TORCH_HOME": "/torch-from-driver", "NOT_FORWARDED": "x"}.items():
        monkeypatch.setenv(name, str(value))
    return {**paths, "overrides": [f"train.mlflow_tracking_uri={paths['mlruns'].as_uri()}",
                                   "train.wandb_project=raykit-tests"]}


def probes(directory: Path) -> list[dict]:
    return [json.loads(path.read_text()) for path in sorted(directory.glob("*.json"))]


def test_a_train_worker_sees_the_forwarded_variables_and_logs_what_metrics_csv_holds(ray_address, storage,
                                                                                       tracked):
    result = raykit.train(None, [*TINY, *tracked["overrides"], f"storage={storage}", "name=tracked",
                                 "scaling.env_vars={SPEC_ONLY: from-spec, HF_HOME: /from-spec}"])
    seen = probes(tracked["probe"])  # each model the worker built (for training, for its test evaluation)
    assert seen and all(probe == {"SPEC_ONLY": "from-spec", "HF_HOME": "/from-spec",
                                  "TORCH_HOME": "/torch-from-driver", "WANDB_MODE": "offline"} for probe in seen)
    (run,) = wandb_runs(tracked["wandb-files"]).values()  # WANDB_DIR reached rank 0
    assert run["name"] == "tracked" and run["config"]["scaling.env_vars"] == '["HF_HOME", "SPEC_ONLY"]'
    assert_wandb_history_is_metrics_csv(run, Path(result.run_dir))
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracked["mlruns"].as_uri())
    mlflow = client.get_run((Path(result.run_dir) / "mlflow_run_id").read_text())
    assert mlflow.info.run_name == "tracked" and mlflow.info.status == "FINISHED"
    assert mlflow.data.metrics["val_acc"] == pytest.approx(result.history[-1]["val_acc"], rel=1e-6)


def test_a_sweep_logs_one_run_per_trial_grouped_by_the_sweep(ray_address, storage, tracked):
    result = raykit.tune(None, {"optim.lr": {"grid": [1e-3, 3e-3]}},
                         [*TINY, *tracked["overrides"], f"storage={storage}", "name=tracked-sweep",
                          "scaling.env_vars={SPEC_ONLY: in-trials}"])
    trial_ids = sorted(trial.trial_id for trial in result.trials)
    assert len(trial_ids) == 2 and all(trial.status == "TERMINATED" for trial in result.trials)
    seen = probes(tracked["probe"])
    assert len(seen) >= 2 and all(probe.get("SPEC_ONLY") == "in-trials" and "NOT_FORWARDED" not in probe
                                  for probe in seen)
    runs = wandb_runs(tracked["wandb-files"])
    assert sorted((run["name"], run["group"]) for run in runs.values()) == [(t, "tracked-sweep") for t in trial_ids]
    for run in runs.values():
        assert_wandb_history_is_metrics_csv(run, Path(storage) / "tracked-sweep" / "trials" / run["name"])
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracked["mlruns"].as_uri())
    sweep_run = client.get_run((Path(storage) / "tracked-sweep" / "mlflow_run_id").read_text())
    assert sweep_run.info.run_name == "tracked-sweep" and sweep_run.info.status == "FINISHED"
    experiment = client.get_experiment(sweep_run.info.experiment_id)
    assert experiment.name == "tracked-sweep"
    children = [run for run in client.search_runs([experiment.experiment_id])
                if run.data.tags.get("mlflow.parentRunId") == sweep_run.info.run_id]
    assert sorted(run.info.run_name for run in children) == trial_ids
