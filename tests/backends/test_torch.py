"""The PyTorch backend without Ray: models, the loop with a stub report, checkpoints and resume."""

from __future__ import annotations

import dataclasses

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from raykit.backends.torch import checkpoint as ckpt
from raykit.data.order import epoch_order
from raykit.engine import evaluate_checkpoint, fit
from raykit.backends.torch.models import MODELS, build_model, to_model_layout
from raykit.checkpoint import CheckpointError, read_manifest
from raykit.session import WorkerSession
from raykit.backends.torch import INFO
from raykit.spec import load_spec

MODEL_NAMES = INFO.model_names


def tiny_spec(*overrides: str):
    return load_spec(None, ["scaling.num_workers=1", "train.epochs=2", "train.batch_size=64", *overrides])


class Recorder:
    """A stub ``report`` that keeps metrics and copies of the checkpoints it is given."""

    def __init__(self, root: Path):
        self.root = root
        self.metrics: list[dict] = []
        self.checkpoints: list[Path] = []

    def __call__(self, metrics: dict, checkpoint_dir: str | None) -> None:
        self.metrics.append(metrics)
        if checkpoint_dir:
            target = self.root / f"epoch{metrics['epoch']}"
            shutil.copytree(checkpoint_dir, target)
            self.checkpoints.append(target)


def test_registry_implements_every_spec_model_name():
    assert set(MODELS.names()) == set(MODEL_NAMES)


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("shape", [(8, 8, 1), (32, 32, 3), (5, 7, 2)])
def test_models_build_for_any_input_shape(name, shape):
    spec = load_spec(None, [f"model.name={name}"]).model
    model = build_model(spec, shape, 10).eval()
    logits = model(to_model_layout(torch.rand(4, *shape)))
    assert logits.shape == (4, 10)


def test_cnn_is_the_seed_architecture():
    model = build_model(load_spec().model, (8, 8, 1), 10)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [c.out_channels for c in convs] == [32, 64, 128] and all(c.kernel_size == (3, 3) for c in convs)
    assert len(norms) == 3 and len([m for m in model.modules() if isinstance(m, torch.nn.MaxPool2d)]) == 3
    assert [(l.in_features, l.out_features) for l in linears] == [(128, 128), (128, 10)]
    assert [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)] == [0.5]


def test_user_factory_is_imported_from_its_string():
    spec = load_spec(None, ["model.name=tests.backends.user_models:tiny_linear"]).model
    model = build_model(spec, (8, 8, 1), 10)
    assert isinstance(model[-1], torch.nn.Linear)
    # Validation refuses a module it cannot find; a worker whose Python path lacks it still names the field.
    with pytest.raises(ImportError, match="model.name"):
        build_model(dataclasses.replace(spec, name="tests.no_such_module:f"), (8, 8, 1), 10)


def test_epoch_order_gives_equal_disjoint_shards():
    shards = [epoch_order(101, seed=0, epoch=1, rank=r, world_size=2) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 50
    assert not set(shards[0].tolist()) & set(shards[1].tolist())
    assert not np.array_equal(epoch_order(101, 0, 1, 0, 2), epoch_order(101, 0, 2, 0, 2))


def test_fit_learns_reports_every_epoch_and_checkpoints(tmp_path):
    recorder = Recorder(tmp_path)
    run_dir = tmp_path / "run"
    out = fit(tiny_spec("train.epochs=3"), WorkerSession(report=recorder, run_dir=str(run_dir)))
    assert [m["epoch"] for m in recorder.metrics] == [1, 2, 3]
    assert recorder.metrics[-1]["val_acc"] > 0.5  # chance is 0.1
    assert recorder.metrics[-1]["train_loss"] < recorder.metrics[0]["train_loss"]
    assert len(recorder.checkpoints) == 3 and len(out["history"]) == 3
    manifest = read_manifest(recorder.checkpoints[-1])
    assert manifest["framework"] == "torch" and manifest["epoch"] == 3
    assert set(manifest["files"]) == {"model.pt", "optimizer.pt", "scheduler.pt", "rng.json"}
    assert manifest["weights"] == "model.pt"
    assert (run_dir / "metrics.csv").read_text().count("\n") == 4  # header + 3 epochs


def test_checkpoint_every_n_epochs_and_always_the_last(tmp_path):
    recorder = Recorder(tmp_path)
    fit(tiny_spec("train.epochs=5", "checkpoint.every_n_epochs=2"), WorkerSession(report=recorder))
    assert [p.name for p in recorder.checkpoints] == ["epoch2", "epoch4", "epoch5"]


def test_deterministic_resume_continues_where_the_checkpoint_left_off_bit_identical_to_a_straight_run(tmp_path):
    # train.deterministic: the guarantee is bit-identical weights (with dropout and augmentation on).
    options = ("train.deterministic=true", "augment.preset=standard", "model.dropout=0.3")
    straight = Recorder(tmp_path / "a")
    fit(tiny_spec("train.epochs=4", *options), WorkerSession(report=straight))
    first = Recorder(tmp_path / "b")
    fit(tiny_spec("train.epochs=2", *options), WorkerSession(report=first))
    resumed = Recorder(tmp_path / "c")
    out = fit(tiny_spec("train.epochs=4", *options),
              WorkerSession(report=resumed, resume_dir=str(first.checkpoints[-1])))
    assert [m["epoch"] for m in resumed.metrics] == [3, 4]
    assert [h["epoch"] for h in out["history"]] == [1, 2, 3, 4]
    final_straight = ckpt.load_weights(straight.checkpoints[-1])
    final_resumed = ckpt.load_weights(resumed.checkpoints[-1])
    assert final_straight.keys() == final_resumed.keys()
    for key, value in final_straight.items():
        assert torch.equal(final_resumed[key], value), key
    assert torch.are_deterministic_algorithms_enabled()
    fit(tiny_spec("train.epochs=1"), WorkerSession())  # the next run in this process is not deterministic
    assert not torch.are_deterministic_algorithms_enabled()


def test_tampered_checkpoint_is_detected_and_named(tmp_path):
    recorder = Recorder(tmp_path)
    fit(tiny_spec("train.epochs=1"), WorkerSession(report=recorder))
    directory = recorder.checkpoints[-1]
    with open(directory / "model.pt", "ab") as handle:
        handle.write(b"junk")
    with pytest.raises(CheckpointError, match="model.pt"):
        ckpt.load_weights(str(directory))
    (directory / "manifest.json").unlink()
    with pytest.raises(CheckpointError, match="not a complete"):
        read_manifest(directory)


def test_checkpoint_holds_no_code(tmp_path):
    recorder = Recorder(tmp_path)
    fit(tiny_spec("train.epochs=1"), WorkerSession(report=recorder))
    directory = recorder.checkpoints[-1]
    torch.load(directory / "optimizer.pt", weights_only=True)  # plain tensors and numbers only
    json.loads((directory / "rng.json").read_text())


def test_evaluate_checkpoint_on_test_split(tmp_path):
    recorder = Recorder(tmp_path)
    spec = tiny_spec("train.epochs=3")
    fit(spec, WorkerSession(report=recorder))
    metrics = evaluate_checkpoint(spec, str(recorder.checkpoints[-1]), "test")
    assert metrics["test_samples"] == 269 and metrics["test_acc"] > 0.5
