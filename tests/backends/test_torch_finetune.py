"""Fine-tuning, schedules and loop features of the PyTorch backend, without Ray."""

from __future__ import annotations

import math

import pytest
import torch

from raykit.backends.torch import finetune
from raykit.engine import fit, optimizer_steps_per_epoch
from raykit.backends.torch.models import build_model
from raykit.checkpoint import CheckpointError
from raykit.schedules import SCHEDULES, frozen_at_epoch, lr_multiplier
from raykit.session import WorkerSession
from raykit.spec import SCHEDULES as SPEC_SCHEDULES
from raykit.spec import load_spec
from tests.backends.test_torch import Recorder, tiny_spec


def saved_state_dict(tmp_path, spec, num_classes=7, prefix="module.") -> str:
    """A state dict as DDP would save it (keys prefixed), for a model with another head size."""
    model = build_model(spec.model, (8, 8, 1), num_classes)
    path = tmp_path / "pretrained.pt"
    torch.save({prefix + k: v for k, v in model.state_dict().items()}, path)
    return str(path)


def test_resnets_build_and_train_a_step():
    for name in ("resnet18", "resnet34", "resnet50"):
        spec = load_spec(None, [f"model.name={name}"]).model
        model = build_model(spec, (8, 8, 1), 10)
        assert model.conv1.stride == (1, 1) and isinstance(model.maxpool, torch.nn.Identity)  # small stem
        loss = torch.nn.functional.cross_entropy(model(torch.rand(4, 1, 8, 8)), torch.arange(4))
        loss.backward()
        assert model.conv1.weight.grad is not None and "fc.weight" in model.state_dict()
    big = build_model(load_spec(None, ["model.name=resnet18", "model.stem=imagenet"]).model, (64, 64, 3), 5)
    assert big.conv1.kernel_size == (7, 7) and big(torch.rand(2, 3, 64, 64)).shape == (2, 5)


def test_remap_strips_wrapper_prefixes_and_applies_the_user_map():
    state = {"module._orig_mod.features.0.weight": 1, "backbone.fc.bias": 2}
    remapped = finetune.remap_keys(state, {"backbone.": ""})
    assert set(remapped) == {"features.0.weight", "fc.bias"}


def test_init_from_ddp_state_dict_loads_backbone_and_reinitialises_a_new_head(tmp_path):
    spec = tiny_spec()
    path = saved_state_dict(tmp_path, spec, num_classes=7)
    spec = tiny_spec(f"finetune.init_from={path}")
    model = build_model(spec.model, (8, 8, 1), 10)
    report = finetune.load_initial_weights(spec, model)
    source = torch.load(path, weights_only=True)
    assert torch.equal(model.state_dict()["0.weight"], source["module.0.weight"])
    head = finetune.parameterised_layers(model)[-1][0]
    assert report.mismatched == [f"{head}.weight", f"{head}.bias"] and not report.unexpected
    assert "re-initialised" in report.summary()


def test_nothing_matching_fails_clearly(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"encoder.layer.weight": torch.zeros(3)}, path)
    spec = tiny_spec(f"finetune.init_from={path}")
    with pytest.raises(ValueError, match="no tensor.*key_prefix_map"):
        finetune.load_initial_weights(spec, build_model(spec.model, (8, 8, 1), 10))


def test_freezing_first_n_keeps_those_weights_and_norm_statistics(tmp_path):
    path = saved_state_dict(tmp_path, tiny_spec(), num_classes=10)
    spec = tiny_spec(f"finetune.init_from={path}", "finetune.freeze_first_n=4")
    recorder = Recorder(tmp_path / "ckpts")
    fit(spec, WorkerSession(report=recorder))
    before = {k.removeprefix("module."): v for k, v in torch.load(path, weights_only=True).items()}
    after = torch.load(recorder.checkpoints[-1] / "model.pt", weights_only=True)
    # Layers 1-4 (conv, bn, conv, bn) are frozen, running statistics included; the rest trained.
    for key in ("0.weight", "0.bias", "2.weight", "2.running_mean", "2.running_var", "4.weight", "6.bias"):
        assert torch.equal(after[key], before[key]), key
    for key in ("8.weight", "10.running_mean", "13.weight", "16.weight"):
        assert not torch.equal(after[key], before[key]), key


def test_freeze_patterns_and_the_head_is_never_frozen():
    model = build_model(tiny_spec().model, (8, 8, 1), 10)
    spec = tiny_spec("finetune.freeze_first_n=100", "finetune.freeze_patterns=['^1[03]$']")
    frozen = finetune.frozen_layer_names(model, spec.finetune)
    head = finetune.parameterised_layers(model)[-1][0]
    assert head not in frozen and len(frozen) == len(finetune.parameterised_layers(model)) - 1
    only_pattern = finetune.frozen_layer_names(model, tiny_spec("finetune.freeze_patterns=['^1[03]$']").finetune)
    assert only_pattern == ["10", "13"]


def test_gradual_unfreezing_thaws_one_layer_from_the_top_every_k_epochs():
    spec = tiny_spec("finetune.freeze_first_n=3", "finetune.unfreeze_every=2").finetune
    frozen = ["a", "b", "c"]
    assert [frozen_at_epoch(frozen, spec, e) for e in (1, 2, 3, 5, 7, 9)] == [
        ["a", "b", "c"], ["a", "b", "c"], ["a", "b"], ["a"], [], []]


def test_backbone_learning_rate_multiplier():
    model = build_model(tiny_spec().model, (8, 8, 1), 10)
    groups = finetune.parameter_groups(model, 0.01, 0.1)
    assert [g["lr"] for g in groups] == [0.01, pytest.approx(0.001)]
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_schedule_registry_matches_the_spec_and_curves_are_right():
    assert set(SCHEDULES.names()) == set(SPEC_SCHEDULES)
    optim = load_spec(None, ["optim.schedule=step", "optim.step_size=2", "optim.gamma=0.5"]).optim
    step = lr_multiplier(optim, steps_per_epoch=10, total_steps=100)
    assert [step(s) for s in (0, 19, 20, 40)] == [1.0, 1.0, 0.5, 0.25]
    optim = load_spec(None, ["optim.schedule=cosine", "optim.warmup_epochs=1", "optim.min_lr_fraction=0.1"]).optim
    cosine = lr_multiplier(optim, steps_per_epoch=10, total_steps=110)
    assert cosine(0) == pytest.approx(0.1) and cosine(9) == pytest.approx(1.0)
    assert cosine(60) == pytest.approx(0.55) and cosine(110) == pytest.approx(0.1)
    onecycle = lr_multiplier(load_spec(None, ["optim.schedule=onecycle"]).optim, 10, 100)
    assert onecycle(0) == pytest.approx(1 / 25) and onecycle(30) == pytest.approx(1.0) and onecycle(100) < 1e-3


def test_schedule_drives_the_reported_learning_rate(tmp_path):
    recorder = Recorder(tmp_path)
    fit(tiny_spec("train.epochs=3", "optim.schedule=step", "optim.step_size=1", "optim.gamma=0.5"),
        WorkerSession(report=recorder))
    assert [m["lr"] for m in recorder.metrics] == pytest.approx([5e-4, 2.5e-4, 1.25e-4])


def test_gradient_accumulation_takes_fewer_optimizer_steps(tmp_path):
    recorder = Recorder(tmp_path)
    spec = tiny_spec("train.epochs=1", "train.batch_size=32", "train.grad_accum_steps=4")
    fit(spec, WorkerSession(report=recorder))
    assert recorder.metrics[0]["global_step"] == optimizer_steps_per_epoch(1259, spec, 1) == math.ceil(40 / 4)


def test_gradient_clipping_bounds_every_update(tmp_path):
    spec = tiny_spec("train.epochs=1", "optim.name=sgd", "optim.momentum=0", "optim.lr=1.0",
                     "optim.grad_clip_norm=1e-6", "model.dropout=0")
    recorder = Recorder(tmp_path)
    torch.manual_seed(spec.train.seed)  # fit builds its model right after seeding the same way
    initial = build_model(spec.model, (8, 8, 1), 10).state_dict()
    fit(spec, WorkerSession(report=recorder))
    final = torch.load(recorder.checkpoints[-1] / "model.pt", weights_only=True)
    moved = torch.sqrt(sum(((final[k] - initial[k]) ** 2).sum() for k in initial if k.endswith("weight")))
    steps = recorder.metrics[0]["global_step"]
    assert 0 < moved <= steps * 1e-6 * 1.01


def test_early_stopping_ends_the_run_and_checkpoints_the_last_epoch(tmp_path):
    recorder = Recorder(tmp_path)
    out = fit(tiny_spec("train.epochs=10", "optim.lr=1e-9", "train.early_stopping_patience=2"),
              WorkerSession(report=recorder))
    assert out["stopped_early"] and len(out["history"]) == 3
    assert recorder.checkpoints[-1].name == "epoch3"


def test_all_loop_features_together_still_learn(tmp_path):
    recorder = Recorder(tmp_path)
    spec = tiny_spec("train.epochs=4", "augment.preset=light", "augment.ops=[{op: mixup, alpha: 0.2, p: 0.5}]",
                     "train.label_smoothing=0.1", "optim.name=adamw", "optim.lr=3e-3", "optim.weight_decay=0.01",
                     "optim.schedule=cosine", "optim.warmup_epochs=0.5", "train.grad_accum_steps=2",
                     "optim.grad_clip_norm=5", "train.precision=bf16")
    fit(spec, WorkerSession(report=recorder))
    assert recorder.metrics[-1]["val_acc"] > 0.6


def test_pretrained_imagenet_loads_the_cached_torchvision_file(tmp_path, monkeypatch):
    import torchvision

    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), cache / "resnet18-f37072fd.pth")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    spec = load_spec(None, ["model.name=resnet18", "model.pretrained=imagenet"])
    model = build_model(spec.model, (8, 8, 1), 10)
    report = finetune.load_initial_weights(spec, model)
    # A 1-channel small stem and a 10-class head differ from ImageNet's; everything else is loaded.
    assert set(report.mismatched) == {"conv1.weight", "fc.weight", "fc.bias"}
    assert len(report.loaded) == len(model.state_dict()) - 3


def test_init_from_a_raykit_checkpoint_by_path_and_by_uri(tmp_path):
    recorder = Recorder(tmp_path)
    fit(tiny_spec("train.epochs=1"), WorkerSession(report=recorder))
    directory = recorder.checkpoints[-1]
    saved = torch.load(directory / "model.pt", weights_only=True)
    for location in (str(directory), directory.as_uri()):
        spec = tiny_spec(f"finetune.init_from={location}")
        model = build_model(spec.model, (8, 8, 1), 10)
        report = finetune.load_initial_weights(spec, model)
        assert len(report.loaded) == len(saved) and not report.mismatched
        assert torch.equal(model.state_dict()["0.weight"], saved["0.weight"])


def test_init_from_a_truncated_checkpoint_fails_naming_the_file(tmp_path):
    recorder = Recorder(tmp_path)
    fit(tiny_spec("train.epochs=1"), WorkerSession(report=recorder))
    directory = recorder.checkpoints[-1]
    weights = directory / "model.pt"
    weights.write_bytes(weights.read_bytes()[:-64])
    spec = tiny_spec(f"finetune.init_from={directory}")
    with pytest.raises(CheckpointError, match=r"model\.pt"):
        finetune.load_initial_weights(spec, build_model(spec.model, (8, 8, 1), 10))


def test_stop_at_ends_the_run_once_the_monitored_metric_reaches_it(tmp_path):
    recorder = Recorder(tmp_path)
    result = fit(tiny_spec("train.epochs=20", "train.stop_at=0.9"), WorkerSession(report=recorder))
    epochs = [m["epoch"] for m in recorder.metrics]
    assert result["stopped_early"] and len(epochs) < 20
    assert recorder.metrics[-1]["val_acc"] >= 0.9 and all(m["val_acc"] < 0.9 for m in recorder.metrics[:-1])
    assert recorder.checkpoints[-1].name == f"epoch{epochs[-1]}"  # the stopping epoch is checkpointed
