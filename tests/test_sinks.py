"""Metric sinks without Ray: TensorBoard event files read back with TensorBoard's own reader, resumed
runs, run directories on a URI, the loops' wiring, MLflow params and metrics (file store), W&B's offline
run files read back, and a sweep's grouping of its trials' runs."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from raykit import storage
from raykit.history import read_history_csv
from raykit.session import WorkerSession
from raykit.sinks import TAGS, TRACKED, MetricSinks, open_sweep_tracking, spec_params
from raykit.spec import SpecError, load_spec
from tests.backends.test_torch import tiny_spec


def read_scalars(directory) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag under ``directory`` as ``[(step, value), ...]``, through TensorBoard's reader."""
    accumulator = EventAccumulator(str(directory), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}


def epoch_metrics(epoch: int) -> dict:
    """Distinct values per metric and epoch, so that a point in the wrong place is seen."""
    values = {key: epoch + index / 10 for index, key in enumerate(TAGS)}
    return {"epoch": epoch, "global_step": 7 * epoch, **values}


def write_epochs(spec, run_dir: str, epochs, resumed_after: int = 0, change: float = 0.0) -> MetricSinks:
    sinks = MetricSinks.open(spec, run_dir, resumed_after)
    for epoch in epochs:
        sinks.write({k: v + change for k, v in epoch_metrics(epoch).items()}, step=epoch)
    sinks.close()
    return sinks


def expected(epochs, change: float = 0.0) -> dict[str, list[tuple[int, float]]]:
    return {TAGS[key]: [(e, pytest.approx(epoch_metrics(e)[key] + change, rel=1e-6)) for e in epochs]
            for key in TAGS}


def test_tensorboard_scalars_read_back_with_their_steps(tmp_path):
    write_epochs(load_spec(), str(tmp_path), [1, 2, 3])
    assert read_scalars(tmp_path / "tensorboard") == expected([1, 2, 3])


def test_only_the_metrics_present_are_written(tmp_path):
    sinks = MetricSinks.open(load_spec(), str(tmp_path))
    sinks.write({"epoch": 1, "train_loss": 0.5, "val_acc": None}, step=1)
    sinks.close()
    assert read_scalars(tmp_path / "tensorboard") == {"train/loss": [(1, 0.5)]}


def test_resumed_run_adds_an_event_file_and_keeps_earlier_epochs(tmp_path):
    spec = load_spec()
    write_epochs(spec, str(tmp_path), [1, 2, 3])
    write_epochs(spec, str(tmp_path), [4, 5], resumed_after=3)
    assert len(list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))) == 2
    assert read_scalars(tmp_path / "tensorboard") == expected([1, 2, 3, 4, 5])


def test_resume_from_an_older_checkpoint_replaces_the_epochs_it_repeats(tmp_path):
    spec = load_spec()
    write_epochs(spec, str(tmp_path), [1, 2, 3])
    write_epochs(spec, str(tmp_path), [3, 4], resumed_after=2, change=100.0)
    scalars = read_scalars(tmp_path / "tensorboard")
    assert scalars["val/acc"] == [(1, pytest.approx(1.3)), (2, pytest.approx(2.3)),
                                  (3, pytest.approx(103.3)), (4, pytest.approx(104.3))]


def test_uri_run_dir_holds_a_readable_event_file_after_every_epoch(tmp_path):
    run_dir = f"memory://raykit-sinks-{tmp_path.name}/run"
    sinks = MetricSinks.open(load_spec(), run_dir)
    for epoch in (1, 2):
        sinks.write(epoch_metrics(epoch), step=epoch)
        copy = tmp_path / f"after{epoch}"
        copy.mkdir()
        storage.download_dir(storage.join(run_dir, "tensorboard"), str(copy))
        assert len(list(copy.iterdir())) == 1
        assert [step for step, _ in read_scalars(copy)["train/loss"]] == list(range(1, epoch + 1))
    sinks.close()
    assert not Path(sinks.local_dir).exists()


def test_torch_fit_writes_one_point_per_epoch(tmp_path):
    from raykit.engine import fit

    result = fit(tiny_spec("train.epochs=3", "train.max_steps_per_epoch=2"), WorkerSession(run_dir=str(tmp_path)))
    scalars = read_scalars(tmp_path / "tensorboard")
    assert set(scalars) == set(TAGS.values())
    assert scalars["val/loss"] == [(row["epoch"], pytest.approx(row["val_loss"], rel=1e-6))
                                   for row in result["history"]]
    assert [step for step, _ in scalars["time/epoch_s"]] == [1, 2, 3]


def test_tf_fit_writes_one_point_per_epoch(tmp_path):
    import raykit.backends.tf  # noqa: F401  (Keras on TensorFlow, set before TensorFlow loads)
    from raykit.engine import fit

    spec = load_spec(None, ["framework=tf", "scaling.num_workers=1", "train.epochs=2", "train.max_steps_per_epoch=2"])
    result = fit(spec, WorkerSession(run_dir=str(tmp_path)))
    assert read_scalars(tmp_path / "tensorboard")["train/acc"] == [
        (row["epoch"], pytest.approx(row["train_acc"], rel=1e-6)) for row in result["history"]]


def test_tensorboard_false_writes_no_event_files(tmp_path):
    from raykit.engine import fit

    fit(tiny_spec("train.epochs=1", "train.max_steps_per_epoch=1", "train.tensorboard=false"),
        WorkerSession(run_dir=str(tmp_path)))
    assert (tmp_path / "metrics.csv").exists() and not (tmp_path / "tensorboard").exists()


def test_spec_params_are_dotted_field_paths():
    params = spec_params(load_spec(None, ["optim.lr=0.01", "tune.search_space={optim.lr: {choice: [0.1]}}"]))
    assert params["optim.lr"] == 0.01 and params["train.tensorboard"] is True
    assert params["model.filters"] == "[32, 64, 128]"
    assert params["tune.search_space"] == '{"optim.lr": {"choice": [0.1]}}'


def test_mlflow_tracking_uri_without_mlflow_installed_names_the_field(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # importlib.util.find_spec then finds nothing
    with pytest.raises(SpecError, match="pip install mlflow") as caught:
        load_spec(None, ["train.mlflow_tracking_uri=http://localhost:5000"])
    assert caught.value.fields == ["train.mlflow_tracking_uri"]


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch):
    """A file:// MLflow tracking store under tmp_path (MLflow 3 wants an opt-in for the file store)."""
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    return (tmp_path / "mlruns").as_uri()


def mlflow_run(store: str, run_dir: Path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store)
    return client, client.get_run((run_dir / "mlflow_run_id").read_text())


def test_mlflow_records_params_once_and_metrics_every_epoch(tmp_path, mlflow_store):
    spec = load_spec(None, ["name=digits-a", f"train.mlflow_tracking_uri={mlflow_store}", "optim.lr=0.01"])
    write_epochs(spec, str(tmp_path / "digits-a"), [1, 2, 3])  # <storage>/<name>: the run's name
    client, run = mlflow_run(mlflow_store, tmp_path / "digits-a")
    assert run.data.params == {key: str(value) for key, value in spec_params(spec).items()}
    assert client.get_experiment(run.info.experiment_id).name == "digits-a"
    assert run.info.run_name == "digits-a" and run.info.status == "FINISHED"
    history = client.get_metric_history(run.info.run_id, "val_acc")
    assert [(m.step, m.value) for m in history] == [(e, pytest.approx(epoch_metrics(e)["val_acc"])) for e in (1, 2, 3)]
    assert set(run.data.metrics) == set(TAGS) | {"global_step"}  # metrics.csv's columns that were given


def test_mlflow_resumed_run_continues_the_same_mlflow_run(tmp_path, mlflow_store):
    spec = load_spec(None, ["name=digits-b", f"train.mlflow_tracking_uri={mlflow_store}",
                            "train.mlflow_experiment=sweeps"])
    first = write_epochs(spec, str(tmp_path / "run"), [1, 2, 3])
    second = write_epochs(spec, str(tmp_path / "run"), [4, 5], resumed_after=3)
    client, run = mlflow_run(mlflow_store, tmp_path / "run")
    assert second.run_id("mlflow") == first.run_id("mlflow") == run.info.run_id
    assert client.get_experiment(run.info.experiment_id).name == "sweeps"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == [1, 2, 3, 4, 5]


def test_mlflow_run_left_open_by_a_failed_attempt_is_ended_not_reused(tmp_path, mlflow_store):
    from mlflow.tracking import MlflowClient

    spec = load_spec(None, ["name=digits-c", f"train.mlflow_tracking_uri={mlflow_store}"])
    crashed = MetricSinks.open(spec, str(tmp_path / "a"))
    crashed.write(epoch_metrics(1), step=1)  # never closed, as when fit raises
    fresh = write_epochs(spec, str(tmp_path / "b"), [1, 2])
    client = MlflowClient(tracking_uri=mlflow_store)
    assert fresh.run_id("mlflow") != crashed.run_id("mlflow")
    assert client.get_run(crashed.run_id("mlflow")).info.status == "FAILED"
    assert [m.step for m in client.get_metric_history(crashed.run_id("mlflow"), "lr")] == [1]


def test_spec_params_name_env_vars_without_their_values():
    params = spec_params(load_spec(None, ["scaling.env_vars={WANDB_API_KEY: secret, B: x}"]))
    assert params["scaling.env_vars"] == '["B", "WANDB_API_KEY"]'


# --- Weights & Biases (offline run files) ---------------------------------------------------------------

def test_wandb_project_without_wandb_installed_names_the_field(monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(SpecError, match=r"needs wandb: pip install 'raykit\[wandb\]'") as caught:
        load_spec(None, ["train.wandb_project=digits"])
    assert caught.value.fields == ["train.wandb_project"] and "'digits'" in str(caught.value)


@pytest.fixture
def wandb_dir(tmp_path, monkeypatch) -> Path:
    """W&B offline (nothing leaves the machine), its files and settings under tmp_path. wandb reads the
    environment once per process, so its process-wide state is torn down before and after."""
    wandb = pytest.importorskip("wandb")
    directory = tmp_path / "wandb-files"
    directory.mkdir()
    for name, value in {"WANDB_MODE": "offline", "WANDB_DIR": directory, "WANDB_SILENT": "true",
                        "WANDB_CONFIG_DIR": tmp_path / "wandb-config", "WANDB_CACHE_DIR": tmp_path / "wandb-cache",
                        "WANDB_DATA_DIR": tmp_path / "wandb-data"}.items():
        monkeypatch.setenv(name, str(value))
    wandb.teardown()
    yield directory
    wandb.teardown()


def wandb_records(path: Path):
    """The protobuf records of one ``.wandb`` file: a 7-byte header (":W&B", magic, version), then
    LevelDB-log chunks (CRC, length, type) in 32 KiB blocks; types 1 (full) or 2-4 (first, middle, last)."""
    from wandb.proto.wandb_internal_pb2 import Record

    data, block, position, pending = path.read_bytes(), 32768, 7, b""
    assert data[:4] == b":W&B", path
    while position + 7 <= len(data):
        if block - position % block < 7:  # a block's tail too short for a header is padding
            position += block - position % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[position:position + 7])
        if kind == 0:
            position += block - position % block
            continue
        pending += data[position + 7:position + 7 + length]
        position += 7 + length
        if kind in (1, 4):
            yield Record.FromString(pending)
            pending = b""


def wandb_runs(directory: Path) -> dict[str, dict]:
    """Every offline run under ``directory``: {id: {name, group, project, config, attempts, history}};
    the attempts of one id (a resumed run) are merged in order, history as {step: {metric: value}}.

    This process's W&B service is shut down first: ``run.finish()`` returns once the service has the
    exit record, not once its writer has flushed the ``.wandb`` file (CI read a finished run's file with
    no record in it); ``wandb.teardown()`` waits for the service to write everything and exit."""
    import wandb

    wandb.teardown()
    runs: dict[str, dict] = {}
    for path in sorted(directory.glob("wandb/offline-run-*/run-*.wandb")):
        for record in wandb_records(path):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                run = runs.setdefault(record.run.run_id, {"config": {}, "history": {}, "attempts": 0})
                run.update(name=record.run.display_name, group=record.run.run_group, project=record.run.project)
                run["attempts"] += 1
                run["config"].update({item.key: json.loads(item.value_json) for item in record.run.config.update
                                      if item.key != "_wandb"})
            elif kind == "history":
                items = {item.key or ".".join(item.nested_key): json.loads(item.value_json)
                         for item in record.history.item}
                run["history"][record.history.step.num] = {k: v for k, v in items.items() if not k.startswith("_")}
    return runs


def approx_rows(rows: dict[int, dict]) -> dict[int, dict]:
    return {step: {key: pytest.approx(value, rel=1e-6) for key, value in row.items()} for step, row in rows.items()}


def assert_wandb_history_is_metrics_csv(run: dict, run_dir: Path) -> None:
    """W&B's steps are metrics.csv's epochs, with every other column's value."""
    rows = read_history_csv((run_dir / "metrics.csv").read_text())
    assert rows and run["history"] == approx_rows(
        {row["epoch"]: {key: row[key] for key in TRACKED if row.get(key) is not None} for row in rows})


def test_wandb_records_config_once_and_metrics_every_epoch(tmp_path, wandb_dir):
    spec = load_spec(None, ["name=digits-w", "train.wandb_project=raykit-tests", "optim.lr=0.01"])
    sinks = write_epochs(spec, str(tmp_path / "digits-w"), [1, 2, 3])
    runs = wandb_runs(wandb_dir)
    run_id = (tmp_path / "digits-w" / "wandb_run_id").read_text()
    assert list(runs) == [run_id] == [sinks.run_id("wandb")]
    run = runs[run_id]
    assert (run["name"], run["project"], run["group"], run["attempts"]) == ("digits-w", "raykit-tests", "", 1)
    assert run["config"] == spec_params(spec)
    assert run["history"] == approx_rows({e: {k: epoch_metrics(e)[k] for k in TRACKED if k in epoch_metrics(e)}
                                          for e in (1, 2, 3)})


def test_wandb_resumed_run_continues_the_same_run(tmp_path, wandb_dir):
    spec = load_spec(None, ["name=digits-x", "train.wandb_project=raykit-tests", "train.wandb_group=g"])
    first = write_epochs(spec, str(tmp_path / "digits-x"), [1, 2, 3])
    second = write_epochs(spec, str(tmp_path / "digits-x"), [4, 5], resumed_after=3)
    fresh = write_epochs(spec, str(tmp_path / "other"), [1])  # a new run directory: a new W&B run
    runs = wandb_runs(wandb_dir)
    assert second.run_id("wandb") == first.run_id("wandb") != fresh.run_id("wandb")
    run = runs[first.run_id("wandb")]
    assert run["attempts"] == 2 and run["group"] == "g" and sorted(run["history"]) == [1, 2, 3, 4, 5]


def test_fit_logs_to_wandb_and_mlflow_what_metrics_csv_holds(tmp_path, wandb_dir, mlflow_store):
    from raykit.engine import fit

    run_dir = tmp_path / "fit-w"
    spec = tiny_spec("train.epochs=2", "train.max_steps_per_epoch=2", "train.wandb_project=raykit-tests",
                     f"train.mlflow_tracking_uri={mlflow_store}")
    fit(spec, WorkerSession(run_dir=str(run_dir)))
    (run,) = wandb_runs(wandb_dir).values()
    assert run["name"] == "fit-w"
    assert_wandb_history_is_metrics_csv(run, run_dir)
    client, mlflow = mlflow_run(mlflow_store, run_dir)
    rows = read_history_csv((run_dir / "metrics.csv").read_text())
    for key in ("train_loss", "val_acc", "lr", "global_step"):
        assert [(m.step, m.value) for m in client.get_metric_history(mlflow.info.run_id, key)] == \
            [(row["epoch"], pytest.approx(row[key], rel=1e-6)) for row in rows]


def test_a_sweep_groups_its_trials_runs(tmp_path, wandb_dir, mlflow_store):
    from mlflow.tracking import MlflowClient

    sweep = load_spec(None, ["name=sweep-a", "train.wandb_project=raykit-tests",
                             f"train.mlflow_tracking_uri={mlflow_store}"])
    base, sweep_run = open_sweep_tracking(sweep, str(tmp_path / "sweep-a"))
    assert (base.train.wandb_group, base.train.mlflow_experiment) == ("sweep-a", "sweep-a")
    assert base.train.mlflow_parent_run_id == sweep_run.run_id == (tmp_path / "sweep-a" / "mlflow_run_id").read_text()
    for trial in ("t1", "t2"):  # as raykit.tuning.trial_spec names them, under <sweep>/trials/
        write_epochs(load_spec(base, {"name": trial}), str(tmp_path / "sweep-a" / "trials" / trial), [1])
    sweep_run.finish(True)
    runs = wandb_runs(wandb_dir)
    assert sorted((run["name"], run["group"]) for run in runs.values()) == [("t1", "sweep-a"), ("t2", "sweep-a")]
    client = MlflowClient(tracking_uri=mlflow_store)
    experiment = client.get_experiment_by_name("sweep-a")
    found = client.search_runs([experiment.experiment_id])
    parent = client.get_run(sweep_run.run_id)
    assert parent.info.run_name == "sweep-a" and parent.info.status == "FINISHED"
    assert parent.data.params["tune.num_samples"] == "1"  # the sweep spec
    children = sorted((run.info.run_name, run.data.tags.get("mlflow.parentRunId")) for run in found
                      if run.info.run_id != sweep_run.run_id)
    assert children == [("t1", sweep_run.run_id), ("t2", sweep_run.run_id)]
    again, resumed = open_sweep_tracking(sweep, str(tmp_path / "sweep-a"))  # a resumed sweep: the same run
    assert resumed.run_id == sweep_run.run_id
    resumed.finish(True)
