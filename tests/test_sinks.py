"""Metric sinks without Ray: TensorBoard event files read back with TensorBoard's own reader, resumed
runs, run directories on a URI, the loops' wiring, and MLflow params and metrics (file store)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from raykit import storage
from raykit.session import WorkerSession
from raykit.sinks import TAGS, MetricSinks, spec_params
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
    write_epochs(spec, str(tmp_path / "run"), [1, 2, 3])
    client, run = mlflow_run(mlflow_store, tmp_path / "run")
    assert run.data.params == {key: str(value) for key, value in spec_params(spec).items()}
    assert client.get_experiment(run.info.experiment_id).name == "digits-a"
    assert run.info.run_name == "digits-a" and run.info.status == "FINISHED"
    history = client.get_metric_history(run.info.run_id, "val_acc")
    assert [(m.step, m.value) for m in history] == [(e, pytest.approx(epoch_metrics(e)["val_acc"])) for e in (1, 2, 3)]
    assert set(run.data.metrics) == set(TAGS)


def test_mlflow_resumed_run_continues_the_same_mlflow_run(tmp_path, mlflow_store):
    spec = load_spec(None, ["name=digits-b", f"train.mlflow_tracking_uri={mlflow_store}",
                            "train.mlflow_experiment=sweeps"])
    first = write_epochs(spec, str(tmp_path / "run"), [1, 2, 3])
    second = write_epochs(spec, str(tmp_path / "run"), [4, 5], resumed_after=3)
    client, run = mlflow_run(mlflow_store, tmp_path / "run")
    assert second.mlflow_run_id == first.mlflow_run_id == run.info.run_id
    assert client.get_experiment(run.info.experiment_id).name == "sweeps"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == [1, 2, 3, 4, 5]


def test_mlflow_run_left_open_by_a_failed_attempt_is_ended_not_reused(tmp_path, mlflow_store):
    from mlflow.tracking import MlflowClient

    spec = load_spec(None, ["name=digits-c", f"train.mlflow_tracking_uri={mlflow_store}"])
    crashed = MetricSinks.open(spec, str(tmp_path / "a"))
    crashed.write(epoch_metrics(1), step=1)  # never closed, as when fit raises
    fresh = write_epochs(spec, str(tmp_path / "b"), [1, 2])
    client = MlflowClient(tracking_uri=mlflow_store)
    assert fresh.mlflow_run_id != crashed.mlflow_run_id
    assert client.get_run(crashed.mlflow_run_id).info.status == "FAILED"
    assert [m.step for m in client.get_metric_history(crashed.mlflow_run_id, "lr")] == [1]
