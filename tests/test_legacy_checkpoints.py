"""Checkpoints written by the training loops of 3f20fa3 (before the shared engine) still verify, export,
resume and evaluate. The fixtures and how they were made: tests/fixtures/checkpoints/README.md.

Each test works on a copy of a fixture in tmp_path, so the committed files are never touched.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import raykit
from raykit.checkpoint import read_manifest
from raykit.engine import evaluate_checkpoint, fit
from raykit.session import WorkerSession
from raykit.spec import load_spec
from tests.backends.test_torch import Recorder

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "checkpoints"
FRAMEWORKS = ["torch", "tf"]
WEIGHT_FILES = {"torch": {"model.pt", "optimizer.pt", "scheduler.pt", "rng.json"},
                "tf": {"model.weights.h5", "state.npz"}}
EXPORT_FORMATS = {"torch": ["torchscript", "onnx"], "tf": ["keras", "saved_model"]}
DIGITS_TEST_SAMPLES = 269  # data.test_fraction 0.15 of the 1,797 digits, rounded per class (stratified)


def legacy_run(framework: str) -> dict:
    """What the generator recorded of the 2-epoch run: overrides, commit and both epochs' metrics."""
    return json.loads((FIXTURES / f"{framework}_history.json").read_text())


@pytest.fixture(params=FRAMEWORKS)
def checkpoint(request, tmp_path) -> tuple[str, Path]:
    """(framework, a copy of its epoch-1 fixture named as a run's checkpoint would be)."""
    copy = tmp_path / "legacy" / "checkpoint_epoch=0001"
    shutil.copytree(FIXTURES / f"{request.param}_epoch1", copy)
    return request.param, copy


def test_fixture_verifies_against_its_manifest(checkpoint):
    framework, directory = checkpoint
    manifest = read_manifest(directory)
    assert manifest["framework"] == framework and manifest["epoch"] == 1
    assert set(manifest["files"]) == WEIGHT_FILES[framework]
    epoch1 = legacy_run(framework)["history"][0]
    assert manifest["metrics"]["val_acc"] == epoch1["val_acc"]
    assert manifest["global_step"] == epoch1["global_step"]


def test_fixture_exports_and_the_export_predicts_digits(checkpoint, tmp_path):
    framework, directory = checkpoint
    out = tmp_path / "export"
    written = raykit.export(str(directory), EXPORT_FORMATS[framework], out_dir=str(out), verbose=False)
    assert sorted(written) == sorted(EXPORT_FORMATS[framework])
    record = json.loads(next(out.glob("*.export.json")).read_text())
    assert all(difference < 1e-4 for difference in record["max_abs_logit_difference"].values())

    # The first format, loaded as a deployment would, classifies the digits far above chance (0.1).
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images.astype(np.float32) / 16.0)[..., None]
    logits = load_export(framework, written[EXPORT_FORMATS[framework][0]])(images)
    assert logits.shape == (len(images), 10)
    assert (logits.argmax(1) == digits.target).mean() > 0.5


def load_export(framework: str, location: str):
    """NHWC images -> logits through the exported file (TorchScript or .keras in safe mode)."""
    if framework == "torch":
        import torch

        module = torch.jit.load(location)
        return lambda images: module(torch.from_numpy(images)).detach().numpy()
    import keras

    model = keras.saving.load_model(location, safe_mode=True)
    return lambda images: np.asarray(model(images, training=False))


# Evaluation and resume run in-process through the engine, as a Ray worker would (the Ray paths around
# them are the same for every checkpoint and are tested in the *_ray.py files).


def test_fixture_evaluates_on_the_test_split(checkpoint):
    framework, directory = checkpoint
    spec = load_spec(read_manifest(directory)["spec"])
    metrics = evaluate_checkpoint(spec, str(directory), "test")
    assert metrics["test_samples"] == DIGITS_TEST_SAMPLES
    val_acc = read_manifest(directory)["metrics"]["val_acc"]
    assert metrics["test_acc"] > 0.5 and abs(metrics["test_acc"] - val_acc) < 0.15


def test_fixture_resumes_to_epoch_2(checkpoint, tmp_path):
    framework, directory = checkpoint
    spec = load_spec(read_manifest(directory)["spec"])
    recorder = Recorder(tmp_path / "resumed")
    history = fit(spec, WorkerSession(report=recorder, resume_dir=str(directory)))["history"]
    assert [row["epoch"] for row in history] == [1, 2]
    assert history[0]["val_acc"] == legacy_run(framework)["history"][0]["val_acc"]  # epoch 1 came from the fixture
    assert history[1]["global_step"] == 2 * history[0]["global_step"]
    # At 3f20fa3 the resumed epoch 2 equals the legacy run's; the engine's data order (raykit.data.order)
    # moved torch's epoch order, so epoch 2 may differ a little.
    assert abs(history[1]["val_acc"] - legacy_run(framework)["history"][1]["val_acc"]) < 0.1
    latest = read_manifest(recorder.checkpoints[-1])
    assert latest["epoch"] == 2 and latest["framework"] == framework
