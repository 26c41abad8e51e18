"""The backend contract, checked the same way for every registered backend: a tiny fit, a resume that
continues exactly, evaluation and export — through :mod:`raykit.engine`, unchanged. The NumPy
reference backend (tests/numpy_backend.py) is registered here with one line and passes the same suite.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import f1_score, recall_score, top_k_accuracy_score

import raykit
from raykit.backends import backend_info, backend_names, load_backend, unregister
from raykit.backends.base import Backend
from raykit.checkpoint import read_manifest
from raykit.data.order import epoch_order
from raykit.data import plan_data, to_float
from raykit.engine import evaluate_checkpoint, fit, predict_split, reference_logits
from raykit.metrics import is_metric_column
from raykit.session import WorkerSession
from raykit.spec import load_spec
from tests.backends.test_torch import Recorder
from tests.numpy_backend import register_numpy_backend

# Each backend's smallest model on digits, and the optimizer every backend has.
MODEL = {"torch": "mlp", "tf": "mlp", "numpy": "linear"}
BACKENDS = ("torch", "tf", "numpy")


@pytest.fixture(autouse=True, scope="module")
def numpy_backend():
    register_numpy_backend()
    yield
    unregister("numpy")


def contract_spec(framework: str, *overrides: str):
    return load_spec(None, [f"framework={framework}", f"model.name={MODEL[framework]}", "model.hidden=[32]",
                            "optim.name=sgd", "optim.lr=0.05", "scaling.num_workers=1", "train.epochs=2",
                            "train.batch_size=64", "train.tensorboard=false",
                            *(["model.hidden=[]"] if framework == "numpy" else []), *overrides])


def test_every_builtin_backend_and_the_test_backend_are_registered():
    assert set(BACKENDS) <= set(backend_names())
    for name in BACKENDS:
        cls = load_backend(name)
        assert issubclass(cls, Backend) and cls.info is backend_info(name)


def test_a_registered_backend_is_a_valid_framework_and_an_unknown_one_is_named():
    assert load_spec(None, ["framework=numpy", "model.name=linear", "optim.name=sgd", "scaling.num_workers=1"]
                     ).framework == "numpy"
    with pytest.raises(ValueError, match="framework"):
        load_spec(None, ["framework=jax"])


@pytest.mark.parametrize("framework", BACKENDS)
def test_tiny_fit_learns_reports_every_epoch_and_checkpoints(framework, tmp_path):
    recorder = Recorder(tmp_path)
    result = fit(contract_spec(framework), WorkerSession(report=recorder))
    assert [m["epoch"] for m in recorder.metrics] == [1, 2] == [h["epoch"] for h in result["history"]]
    assert result["history"][-1]["val_acc"] > 0.6  # 10 classes: chance is 0.1
    assert result["history"][-1]["global_step"] == 2 * result["history"][0]["global_step"] > 0
    for checkpoint in recorder.checkpoints:
        manifest = read_manifest(checkpoint)
        assert manifest["framework"] == framework and manifest["state"]["num_classes"] == 10


@pytest.mark.parametrize("framework", BACKENDS)
def test_resume_continues_exactly_where_a_run_stopped(framework, tmp_path):
    straight = Recorder(tmp_path / "straight")
    fit(contract_spec(framework), WorkerSession(report=straight))
    first = Recorder(tmp_path / "first")
    fit(contract_spec(framework, "train.epochs=1"), WorkerSession(report=first))
    resumed = Recorder(tmp_path / "resumed")
    fit(contract_spec(framework), WorkerSession(report=resumed, resume_dir=str(first.checkpoints[-1])))
    assert [m["epoch"] for m in resumed.metrics] == [2]
    assert resumed.metrics[0]["global_step"] == straight.metrics[1]["global_step"]
    np.testing.assert_allclose(resumed.metrics[0]["train_loss"], straight.metrics[1]["train_loss"], rtol=1e-5)
    spec = contract_spec(framework)
    assert evaluate_checkpoint(spec, str(resumed.checkpoints[-1]))["test_acc"] == pytest.approx(
        evaluate_checkpoint(spec, str(straight.checkpoints[-1]))["test_acc"], abs=1e-9)


@pytest.mark.parametrize("framework", BACKENDS)
def test_evaluation_prediction_and_export_agree(framework, tmp_path):
    recorder = Recorder(tmp_path / "run")
    fit(contract_spec(framework, "train.epochs=1"), WorkerSession(report=recorder))
    checkpoint = recorder.checkpoints[-1]
    spec = contract_spec(framework)
    metrics = evaluate_checkpoint(spec, str(checkpoint))
    truth, predicted = predict_split(spec, str(checkpoint))
    assert metrics["test_samples"] == len(truth) and metrics["test_acc"] == pytest.approx(np.mean(truth == predicted))
    written = raykit.export(str(checkpoint), out_dir=str(tmp_path / "export"), verbose=False)
    assert tuple(written) == backend_info(framework).export_formats
    record = json.loads(next((tmp_path / "export").glob("*.export.json")).read_text())
    assert max(record["max_abs_logit_difference"].values()) < 1e-4


# What train.metrics=[top3_acc, macro_f1, per_class_acc] adds to an epoch's row on digits (10 classes, no
# class names), in this order, whatever the backend.
METRIC_COLUMNS = ["val_top3_acc", "val_macro_f1", *(f"val_acc/{c}" for c in range(10))]


@pytest.mark.parametrize("framework", BACKENDS)
def test_train_metrics_are_the_same_columns_in_every_backend_and_equal_scikit_learn(framework, tmp_path):
    spec = contract_spec(framework, "train.epochs=1", "train.metrics=[top3_acc, macro_f1, per_class_acc]",
                         "checkpoint.monitor=val_macro_f1")
    recorder = Recorder(tmp_path / "checkpoints")
    fit(spec, WorkerSession(report=recorder, run_dir=str(tmp_path / "run")))
    row = recorder.metrics[0]
    assert [key for key in row if is_metric_column(key)] == METRIC_COLUMNS
    header = (tmp_path / "run" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert header[:5 + len(METRIC_COLUMNS)] == ["epoch", "train_loss", "train_acc", "val_loss", "val_acc",
                                                *METRIC_COLUMNS]
    # The logged values are scikit-learn's on the checkpoint's own predictions, for val (each epoch) and for
    # test (the end-of-run evaluation).
    checkpoint, plan = str(recorder.checkpoints[-1]), plan_data(spec.data)
    for split, values in (("val", row), ("test", evaluate_checkpoint(spec, checkpoint))):
        data = plan.splits[split].read()
        logits = reference_logits(spec, checkpoint, to_float(data.x), plan.info.input_shape, 10)
        predicted = logits.argmax(1)
        assert values[f"{split}_top3_acc"] == pytest.approx(top_k_accuracy_score(data.y, logits, k=3,
                                                                                 labels=np.arange(10)), abs=1e-9)
        assert values[f"{split}_macro_f1"] == pytest.approx(f1_score(data.y, predicted, average="macro"), abs=1e-9)
        recall = recall_score(data.y, predicted, average=None, labels=np.arange(10))
        np.testing.assert_allclose([values[f"{split}_acc/{c}"] for c in range(10)], recall, atol=1e-9)


def test_a_backend_refusal_is_a_spec_error_naming_the_field():
    with pytest.raises(ValueError, match="scaling.num_workers"):
        load_spec(None, ["framework=numpy", "model.name=linear", "optim.name=sgd", "scaling.num_workers=2",
                         "train.batch_size=64"])


def test_grad_accumulation_is_a_capability(tmp_path):
    """tf does not declare it: refused at validation; numpy does: the engine runs it."""
    with pytest.raises(ValueError, match="train.grad_accum_steps"):
        load_spec(None, ["framework=tf", "train.grad_accum_steps=2"])
    recorder = Recorder(tmp_path)
    result = fit(contract_spec("numpy", "train.grad_accum_steps=2", "train.epochs=1"), WorkerSession(report=recorder))
    plain = fit(contract_spec("numpy", "train.epochs=1"), WorkerSession())
    assert result["history"][0]["global_step"] == -(-plain["history"][0]["global_step"] // 2)


@pytest.mark.parametrize("world_size", [1, 2, 3])
@pytest.mark.parametrize("seed", [0, 1])
def test_every_backend_feeds_the_same_samples_in_the_same_order(seed, world_size):
    """The engine draws one order (raykit.data.order) and every backend's take() returns exactly those
    rows: the labels, set to the row numbers, come back in the same order from each backend."""
    n = 101
    x = np.random.default_rng(0).random((n, 8, 8, 1), dtype=np.float32)
    rows = np.arange(n)
    for epoch in (1, 2, 3):
        orders = [epoch_order(n, seed, epoch, rank, world_size) for rank in range(world_size)]
        assert len({len(o) for o in orders}) == 1 and len(np.unique(np.concatenate(orders))) == n - n % world_size
        for framework in BACKENDS:
            backend = load_backend(framework)(contract_spec(framework), WorkerSession())
            arrays = backend.to_arrays(x, rows)
            for order in orders:
                _, labels = backend.take(arrays, order)
                np.testing.assert_array_equal(np.asarray(labels), order, err_msg=framework)
    assert not np.array_equal(epoch_order(n, seed, 1, 0, 1), epoch_order(n, seed, 2, 0, 1))


def test_checkpoint_directories_are_only_written_through_the_backend(tmp_path):
    """A checkpoint copied elsewhere still verifies and resumes (self-describing directory)."""
    recorder = Recorder(tmp_path / "run")
    fit(contract_spec("numpy", "train.epochs=1"), WorkerSession(report=recorder))
    moved = tmp_path / "moved"
    shutil.copytree(recorder.checkpoints[-1], moved)
    result = fit(contract_spec("numpy"), WorkerSession(resume_dir=str(moved)))
    assert [h["epoch"] for h in result["history"]] == [1, 2]
    assert Path(moved, "manifest.json").is_file()


@pytest.mark.parametrize("framework", ["torch", "tf"])
def test_optimizer_and_model_registries_match_the_backend_facts(framework):
    """The spec validates optim.name and model.name from BackendInfo without importing the framework;
    the registries that build them must hold exactly those names."""
    import importlib

    info = backend_info(framework)
    optim = importlib.import_module(f"raykit.backends.{framework}.optim")
    models = importlib.import_module(f"raykit.backends.{framework}.models")
    assert set(optim.OPTIMIZERS.names()) == set(info.optimizer_names)
    assert set(models.MODELS.names()) == set(info.model_names)


@pytest.mark.parametrize("framework", ["torch", "tf"])
def test_rmsprop_trains_in_both_frameworks_with_one_meaning(framework, tmp_path):
    spec = contract_spec(framework, "optim.name=rmsprop", "optim.lr=0.01", "train.epochs=1")
    result = fit(spec, WorkerSession())
    assert result["history"][0]["val_acc"] > 0.6
    optim = __import__(f"raykit.backends.{framework}.optim", fromlist=["RMSPROP_RHO"])
    assert (optim.RMSPROP_RHO, optim.RMSPROP_EPSILON) == (0.9, 1e-7)
