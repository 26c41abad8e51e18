"""The torch model zoo (timm:<name>, torchvision:<name>), model.kwargs, ImageNet weights from each library's
own cache (files the tests write there themselves: nothing is ever downloaded), .safetensors init_from,
the driver's check that a weights file fits the model (raykit.train's and raykit.tune's), and a checkpoint's
life after training (load, predict, export). Without Ray."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from raykit.backends.torch import finetune, zoo
from raykit.backends.torch.models import build_model
from raykit.backends.torch.weights_fit import driver_problems, fit_problems
from raykit.engine import fit, reference_logits
from raykit.session import WorkerSession
from raykit.spec import SpecError, load_spec
from tests.backends.test_torch import Recorder, tiny_spec

TIMM_TINY = "test_resnet"  # timm's smallest resnet (0.4 M parameters), weights timm/test_resnet.r160_in1k
VISION_TINY = "mobilenet_v3_small"  # 2.5 M parameters; DEFAULT weights mobilenet_v3_small-047dcff4.pth


@pytest.fixture
def no_download(monkeypatch):
    """Any download attempt fails the test."""
    import huggingface_hub
    import torch.hub

    def refuse(*args, **kwargs):
        raise AssertionError(f"a download was attempted: {args} {kwargs}")

    monkeypatch.setattr(zoo, "fetch", refuse)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


@pytest.fixture
def caches(tmp_path, monkeypatch, no_download):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path


def write_torchvision_cache(arch: str) -> dict[str, torch.Tensor]:
    """A random 1000-class model's state dict, saved where torch.hub caches the DEFAULT weights' url."""
    import torchvision

    torch.manual_seed(1)
    state = torchvision.models.get_model(arch, weights=None).state_dict()
    path, _ = zoo.torchvision_weights_file(arch)
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    return state


def write_hf_cache(arch: str) -> dict[str, torch.Tensor]:
    """A random 1000-class timm model's weights in the Hugging Face hub cache layout (refs/main -> snapshot)."""
    import timm

    torch.manual_seed(2)
    state = {k: v.contiguous() for k, v in timm.create_model(arch).state_dict().items()}
    repo = zoo.hf_hub_cache() / ("models--" + zoo.timm_hub_id(arch).replace("/", "--"))
    revision = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    (repo / "snapshots" / revision).mkdir(parents=True)
    save_file(state, repo / "snapshots" / revision / "model.safetensors")
    return state


def assert_loaded(model, written: dict, except_prefixes: tuple[str, ...]) -> None:
    own = model.state_dict()
    compared = [k for k in written if not k.startswith(except_prefixes)]
    assert compared
    for key in compared:
        assert torch.equal(own[key], written[key]), key
    for prefix in except_prefixes:  # the head keeps fresh weights for another number of classes
        head = [k for k in own if k.startswith(prefix) and k.endswith("weight")]
        assert head and all(own[k].shape != written[k].shape for k in head)


# --- names -----------------------------------------------------------------------------------------

def test_unknown_zoo_names_are_refused_with_close_names_without_building_a_model(monkeypatch):
    import timm
    import torchvision

    def never(*args, **kwargs):
        raise AssertionError("a model was built to check a name")

    monkeypatch.setattr(timm, "create_model", never)
    monkeypatch.setattr(torchvision.models, "get_model", never)
    with pytest.raises(SpecError, match=r"model\.name: got 'timm:resnet51'.*did you mean 'timm:\w+'.*timm\.list_models"):
        load_spec(None, ["model.name=timm:resnet51"])
    with pytest.raises(SpecError, match=r"model\.name: got 'torchvision:resnet181'.*did you mean 'torchvision:resnet18'"):
        load_spec(None, ["model.name=torchvision:resnet181"])
    assert load_spec(None, [f"model.name=timm:{TIMM_TINY}"]).model.name == f"timm:{TIMM_TINY}"
    assert load_spec(None, ["model.name=torchvision:resnet18"]).model.kwargs == {}


def test_model_kwargs_reach_timm_torchvision_and_a_user_factory_and_win_over_raykit_s():
    timm_model = build_model(load_spec(None, [f"model.name=timm:{TIMM_TINY}", "model.kwargs={drop_rate: 0.25}"]).model,
                             (16, 16, 1), 4)
    assert timm_model.drop_rate == 0.25 and timm_model.num_classes == 4 and timm_model.conv1[0].in_channels == 1
    vision = build_model(load_spec(None, [f"model.name=torchvision:{VISION_TINY}", "model.kwargs={dropout: 0.3}"]).model,
                         (16, 16, 3), 4)
    assert vision.classifier[2].p == 0.3 and vision.classifier[3].out_features == 4
    user = build_model(load_spec(None, ["model.name=tests.backends.user_models:tiny_mlp", "model.kwargs={hidden: 7}"]).model,
                       (8, 8, 1), 3)
    assert user[1].out_features == 7 and user[3].out_features == 3
    wins = build_model(load_spec(None, [f"model.name=timm:{TIMM_TINY}", "model.kwargs={num_classes: 6}"]).model,
                       (16, 16, 3), 4)
    assert wins.num_classes == 6
    with pytest.raises(SpecError, match=r"model\.kwargs: got \{'width': 3\} for model\.name='cnn'"):
        load_spec(None, ["model.name=cnn", "model.kwargs={width: 3}"])
    wrong = load_spec(None, ["model.name=tests.backends.user_models:tiny_mlp", "model.kwargs={width: 7}"])
    [(field, message)] = driver_problems(wrong, (8, 8, 1), 3)  # before Ray starts
    assert field == "model.kwargs" and "width" in message and "hidden=4" in message


def test_torchvision_models_take_one_channel_images_through_a_replaced_first_conv():
    model = build_model(load_spec(None, ["model.name=torchvision:resnet18"]).model, (32, 32, 1), 10)
    assert model.conv1.in_channels == 1 and model(torch.rand(2, 1, 32, 32)).shape == (2, 10)


# --- ImageNet weights from the libraries' caches -----------------------------------------------------

@pytest.mark.parametrize("zoo_name, write_cache, head", [
    (f"torchvision:{VISION_TINY}", write_torchvision_cache, "classifier.3."),  # torch hub cache
    (f"timm:{TIMM_TINY}", write_hf_cache, "fc."),  # Hugging Face hub cache, offline
])
def test_imagenet_weights_load_from_the_library_s_own_cache(zoo_name, write_cache, head, caches):
    written = write_cache(zoo_name.split(":")[1])
    spec = load_spec(None, [f"model.name={zoo_name}", "model.pretrained=imagenet"])
    model = build_model(spec.model, (32, 32, 3), 10)
    report = finetune.load_initial_weights(spec, model)
    assert_loaded(model, written, (head,))
    assert report.mismatched == [f"{head}weight", f"{head}bias"]
    assert str(zoo.weights_file(zoo_name)[1]) in report.summary()


def test_a_one_channel_torchvision_model_gets_the_rgb_kernels_summed(caches):
    written = write_torchvision_cache(VISION_TINY)
    spec = load_spec(None, [f"model.name=torchvision:{VISION_TINY}", "model.pretrained=imagenet"])
    gray = build_model(spec.model, (32, 32, 1), 10)
    finetune.load_initial_weights(spec, gray)
    assert torch.allclose(gray.features[0][0].weight, written["features.0.0.weight"].sum(1, keepdim=True))


def test_missing_weights_name_the_file_and_the_command_that_fetches_it(caches):
    with pytest.raises(SpecError) as timm_error:
        load_spec(None, [f"model.name=timm:{TIMM_TINY}", "model.pretrained=imagenet"])
    message = str(timm_error.value)
    assert "models--timm--test_resnet.r160_in1k" in message and str(caches / "hf" / "hub") in message
    assert "hf download timm/test_resnet.r160_in1k model.safetensors" in message and "HF_HUB_OFFLINE" in message
    with pytest.raises(SpecError, match=r"mobilenet_v3_small-047dcff4\.pth is not in .*get_model_weights"):
        load_spec(None, [f"model.name=torchvision:{VISION_TINY}", "model.pretrained=imagenet"])


def test_online_the_driver_fetches_a_missing_file_once_and_reading_a_spec_never_does(caches, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    spec = load_spec(None, [f"model.name=timm:{TIMM_TINY}", "model.pretrained=imagenet"])  # zoo.fetch refuses
    fetched = []
    monkeypatch.setattr(zoo, "fetch", lambda name: fetched.append(name) or write_hf_cache(TIMM_TINY))
    assert driver_problems(spec, (8, 8, 1), 10) == [] and fetched == [f"timm:{TIMM_TINY}"]
    assert driver_problems(spec, (8, 8, 1), 10) == [] and len(fetched) == 1  # now in the cache


def test_init_from_loads_after_the_pretrained_weights_and_the_report_says_so(caches, tmp_path):
    write_hf_cache(TIMM_TINY)
    spec = load_spec(None, [f"model.name=timm:{TIMM_TINY}", "model.pretrained=imagenet"])
    mine = {k: v + 1 for k, v in build_model(spec.model, (32, 32, 3), 10).state_dict().items()
            if k.startswith("layer1.")}
    save_file({"module." + k: v.contiguous() for k, v in mine.items()}, tmp_path / "mine.safetensors")
    spec = load_spec(None, [f"model.name=timm:{TIMM_TINY}", "model.pretrained=imagenet",
                            f"finetune.init_from={tmp_path / 'mine.safetensors'}"])
    model = build_model(spec.model, (32, 32, 3), 10)
    report = finetune.load_initial_weights(spec, model)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in mine.items())
    summary = report.summary()
    assert summary.index("model.safetensors") < summary.index("mine.safetensors")
    assert "loaded after the pretrained weights" in summary


# --- .safetensors and the fit check -------------------------------------------------------------------

def test_a_safetensors_init_from_loads_like_a_state_dict(tmp_path):
    spec = tiny_spec()
    state = build_model(spec.model, (8, 8, 1), 10).state_dict()
    save_file({"module." + k: v for k, v in state.items()}, tmp_path / "w.safetensors")
    spec = tiny_spec(f"finetune.init_from={tmp_path / 'w.safetensors'}")
    model = build_model(spec.model, (8, 8, 1), 10)
    report = finetune.load_initial_weights(spec, model)
    assert len(report.loaded) == len(state) and all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    assert fit_problems(spec, (8, 8, 1), 10) == []


def test_a_file_that_does_not_fit_names_the_first_mismatching_tensors_and_shapes(tmp_path, monkeypatch):
    other = build_model(tiny_spec("model.filters=[8,16]").model, (8, 8, 1), 10).state_dict()
    save_file(other, tmp_path / "other.safetensors")
    torch.save(other, tmp_path / "other.pt")
    for name in ("other.safetensors", "other.pt"):
        spec = tiny_spec(f"finetune.init_from={tmp_path / name}", "model.filters=[4,8]")
        [(field, message)] = fit_problems(spec, (8, 8, 1), 10)
        assert field == "finetune.init_from" and "does not fit model 'cnn'" in message
        assert "first 0.bias: file [8], model [4]; 2.weight: file [8], model [4]" in message  # 0.weight may differ
    # raykit.train refuses it before Ray starts.
    import raykit
    from raykit.ray import cluster

    monkeypatch.setattr(cluster, "connect", lambda *a, **k: pytest.fail("Ray was started"))
    with pytest.raises(SpecError, match="does not fit model"):
        raykit.train(None, [f"finetune.init_from={tmp_path / 'other.safetensors'}", "model.filters=[4,8]",
                            f"storage={tmp_path / 'runs'}"])


# --- training in process ------------------------------------------------------------------------------

@pytest.mark.parametrize("name, kwargs", [(f"timm:{TIMM_TINY}", "{drop_rate: 0.1}"),
                                          (f"torchvision:{VISION_TINY}", "{dropout: 0.1}")])
def test_a_zoo_model_trains_an_epoch_in_process(name, kwargs, tmp_path):
    recorder = Recorder(tmp_path)
    spec = tiny_spec(f"model.name={name}", f"model.kwargs={kwargs}", "train.epochs=1")
    fit(spec, WorkerSession(report=recorder))
    assert len(recorder.metrics) == 1 and recorder.metrics[0]["train_loss"] > 0
    weights = torch.load(recorder.checkpoints[-1] / "model.pt", weights_only=True)
    head = [k for k in weights if k.endswith("weight") and weights[k].ndim == 2][-1]
    assert weights[head].shape[0] == 10  # digits: 10 classes
    logits = reference_logits(spec, str(recorder.checkpoints[-1]), np.random.rand(3, 8, 8, 1).astype(np.float32),
                              (8, 8, 1), 10)  # the checkpoint's model for evaluation, export and prediction
    assert logits.shape == (3, 10) and np.isfinite(logits).all()


def test_a_sweep_checks_the_starting_weights_before_ray_starts_as_train_does(caches, tmp_path, monkeypatch):
    import raykit
    from raykit.ray import cluster

    monkeypatch.setattr(cluster, "connect", lambda *a, **k: pytest.fail("Ray was started"))
    other = build_model(tiny_spec("model.filters=[8,16]").model, (8, 8, 1), 10).state_dict()
    save_file(other, tmp_path / "other.safetensors")
    sweep, runs = {"optim.lr": {"choice": [1e-3, 1e-2]}}, f"storage={tmp_path / 'runs'}"
    with pytest.raises(SpecError, match=r"finetune\.init_from: .*does not fit model 'cnn'"):
        raykit.tune(None, sweep, [f"finetune.init_from={tmp_path / 'other.safetensors'}", "model.filters=[4,8]", runs])
    with pytest.raises(SpecError, match="does not fit model"):  # a fixed value of the search space: every trial's
        raykit.tune(None, {**sweep, "finetune.init_from": str(tmp_path / "other.safetensors")},
                    ["model.filters=[4,8]", runs])
    # Online, a zoo model's missing ImageNet file is fetched once, by the driver, before Ray starts.
    monkeypatch.delenv("HF_HUB_OFFLINE")
    fetched = []
    monkeypatch.setattr(zoo, "fetch", lambda name: fetched.append(name) or write_hf_cache(TIMM_TINY))

    class RayStarts(Exception):
        pass

    monkeypatch.setattr(cluster, "connect", lambda *a, **k: (_ for _ in ()).throw(RayStarts(list(fetched))))
    with pytest.raises(RayStarts, match=rf"\['timm:{TIMM_TINY}'\]"):
        raykit.tune(None, sweep, [f"model.name=timm:{TIMM_TINY}", "model.pretrained=imagenet", runs])
    # Nothing written before Ray starts: only the sweep's lock was taken there, and released (its file gone).
    assert not [path for path in (tmp_path / "runs").rglob("*") if path.is_file()]


# --- past training: load, export, predict -------------------------------------------------------------

SLICE = Path(__file__).resolve().parents[1] / "data" / "cifar10_slice"
# Every new op, two user ops (a function of the op's generator; a factory of a transform drawing from torch's
# RNG), and the imagenet normalize, the one op evaluation also applies.
NEW_OPS = ("augment.ops=[{op: random_resized_crop}, {op: color_jitter, hue: 0.1}, {op: randaugment}, "
           "{op: trivialaugment}, {op: normalize, mean: imagenet}, {op: random_erasing}, "
           "{op: 'tests.backends.user_augment:random_offsets', amount: 0.05}, "
           "{op: 'tests.backends.user_augment:global_offsets', amount: 0.05}]")


@pytest.mark.parametrize("name, kwargs, pretrained", [(f"timm:{TIMM_TINY}", "{drop_rate: 0.1}", "imagenet"),
                                                      ("tests.backends.user_models:tiny_mlp", "{hidden: 7}", "none")])
def test_a_checkpoint_loads_exports_and_predicts_without_the_files_it_started_from(name, kwargs, pretrained,
                                                                                   caches, tmp_path):
    """A zoo model or a user factory with model.kwargs, trained with the new ops on images resized on decode:
    its checkpoint loads (Run.load_model's code), predicts (the prediction actors' Predictor) and exports
    (each program checked against the checkpoint) on a machine without the ImageNet file and the
    finetune.init_from file it started from."""
    import raykit
    from raykit.engine import Predictor
    from raykit.inference import load_model

    if pretrained == "imagenet":
        write_hf_cache(TIMM_TINY)
    common = [f"model.name={name}", f"model.kwargs={kwargs}", f"data.uri={SLICE / 'train.parquet'}",
              "data.resize=[16,16]", NEW_OPS]
    start = build_model(load_spec(None, common).model, (16, 16, 3), 10).state_dict()
    save_file({k: v.contiguous() for k, v in start.items()}, tmp_path / "start.safetensors")
    recorder = Recorder(tmp_path)
    fit(tiny_spec(*common, f"model.pretrained={pretrained}", f"finetune.init_from={tmp_path / 'start.safetensors'}",
                  "train.epochs=1", "train.max_steps_per_epoch=2"), WorkerSession(report=recorder))
    checkpoint = recorder.checkpoints[-1]
    shutil.rmtree(caches / "hf", ignore_errors=True)
    (tmp_path / "start.safetensors").unlink()
    stored = json.loads((checkpoint / "manifest.json").read_text())["spec"]
    with pytest.raises(SpecError, match=r"finetune\.init_from: got .*start\.safetensors"):
        load_spec(stored)  # a new run from this spec still needs its files

    model = load_model(str(checkpoint))
    images = model.preprocess(str(SLICE / "test.parquet"))[:16]  # decoded and resized as the training data was
    assert images.shape == (16, 16, 16, 3)
    assert [op["mean"] for op in model.augmenter.ops if op["op"] == "normalize"] == [[0.485, 0.456, 0.406]]
    with torch.no_grad():
        logits = model(torch.from_numpy(images)).numpy()
    predicted, probabilities = Predictor(stored, str(checkpoint), (16, 16, 3), 10, False)(images)
    assert (predicted == logits.argmax(1)).all() and probabilities.shape == (16, 10)
    written = raykit.export(str(checkpoint), out_dir=str(tmp_path / "export"), verbose=False)
    assert sorted(written) == ["onnx", "torchscript"]
    record = json.loads(next((tmp_path / "export").glob("*.export.json")).read_text())
    assert max(record["max_abs_logit_difference"].values()) < 1e-4
