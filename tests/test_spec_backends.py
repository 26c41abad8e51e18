"""What the spec accepts per framework comes from the backend registry (raykit.backends), not from the spec."""

from __future__ import annotations

import dataclasses
import importlib.util
import subprocess
import sys

import pytest

from raykit.backends import BackendInfo, backend_info, backend_names, register, unregister
from raykit.backends.base import GPU, GRAD_ACCUM, ModelZoo
from raykit.spec import SpecError, load_spec, reference_markdown
from raykit.spec.rules import require_installed


def problems(overrides) -> dict[str, str]:
    with pytest.raises(SpecError) as info:
        load_spec(None, overrides)
    return dict(info.value.problems)


@pytest.fixture
def toy_backend():
    """A backend registered by a test: facts only (validation never loads its implementation)."""

    def refusals(spec):
        return [("train.label_smoothing", "toy cannot smooth labels")] if spec.train.label_smoothing else []

    info = register(BackendInfo(name="toy", implementation="tests.no_such_module:ToyBackend", trainer="data_parallel",
                                model_names=("cnn", "toynet"), optimizer_names=("adam", "lion"),
                                refusals=refusals, required_modules=("numpy",)))
    yield info
    unregister("toy")


def test_framework_is_valid_iff_registered(toy_backend):
    assert "toy" in backend_names()
    spec = load_spec(None, ["framework=toy", "scaling.use_gpu=false"])
    assert spec.framework == "toy"
    unregister("toy")
    message = problems(["framework=toy"])["framework"]
    assert "'toy'" in message and "torch, tf" in message


def test_model_and_optimizer_names_are_the_chosen_backends(toy_backend):
    assert load_spec(None, ["framework=toy", "model.name=toynet", "optim.name=lion"]).model.name == "toynet"
    message = problems(["framework=toy", "model.name=resnet18"])["model.name"]
    assert "'resnet18'" in message and "toy" in message and "cnn, toynet" in message
    message = problems(["optim.name=lion"])["optim.name"]  # torch has no lion
    assert "'lion'" in message and "torch" in message and "rmsprop" in message
    assert "did you mean 'cnn'" in problems(["model.name=cnnn"])["model.name"]


def test_resnets_torch_has_and_tf_has_not_are_refused_on_tf_naming_what_tf_has():
    assert load_spec(None, ["model.name=resnet18"]).model.name == "resnet18"
    message = problems(["framework=tf", "model.name=resnet18"])["model.name"]
    assert "framework tf" in message and ", ".join(backend_info("tf").model_names) in message


@pytest.mark.parametrize("framework", ["torch", "tf"])
def test_rmsprop_is_accepted_on_every_builtin_framework(framework):
    assert load_spec(None, [f"framework={framework}", "optim.name=rmsprop"]).optim.name == "rmsprop"


def test_gradient_accumulation_needs_the_capability():
    assert GRAD_ACCUM in backend_info("torch").capabilities and GRAD_ACCUM not in backend_info("tf").capabilities
    assert load_spec(None, ["train.grad_accum_steps=4"]).train.grad_accum_steps == 4
    message = problems(["framework=tf", "train.grad_accum_steps=4"])["train.grad_accum_steps"]
    assert "got 4" in message and "framework tf" in message and "accepted with tf: 1" in message
    assert "framework torch" in message  # where it is accepted


def test_gpus_need_the_capability(toy_backend):
    assert GPU not in toy_backend.capabilities
    message = problems(["framework=toy", "scaling.use_gpu=true"])["scaling.use_gpu"]
    assert "got True" in message and "framework toy" in message and "false" in message


def test_a_backend_refuses_what_its_refusals_say(toy_backend):
    found = problems(["framework=toy", "train.label_smoothing=0.1"])
    assert found["train.label_smoothing"] == "toy cannot smooth labels"
    # tf's own: one loss-scaled optimizer under fp16, so no backbone multiplier
    message = problems(["framework=tf", "train.precision=fp16", "scaling.use_gpu=true",
                        "finetune.backbone_lr_mult=0.1"])["finetune.backbone_lr_mult"]
    assert "fp16" in message and "accepted" in message


def test_a_framework_whose_packages_are_missing_is_refused_before_a_run_with_the_install_command(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.delitem(__import__("sys").modules, "tensorflow", raising=False)
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "tensorflow" else real_find_spec(name, *a))
    spec = load_spec(None, ["framework=tf"])  # a spec for another machine still loads, checks and prints here
    with pytest.raises(SpecError) as info:
        require_installed(spec)
    message = dict(info.value.problems)["framework"]
    assert message.startswith("tf needs TensorFlow: pip install 'raykit[tf]' (not found here: tensorflow)")
    assert message.endswith("; or accepted here: torch")  # what is installed instead
    require_installed(load_spec(None, ["framework=torch"]))


def test_a_registered_backend_without_an_extra_names_its_packages(toy_backend, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "numpy_missing_for_the_test", None)
    register(dataclasses.replace(toy_backend, required_modules=("numpy_missing_for_the_test",)))
    with pytest.raises(SpecError) as caught:
        require_installed(load_spec(None, ["framework=toy", "scaling.use_gpu=false"]))
    assert dict(caught.value.problems)["framework"].startswith(
        "toy needs numpy_missing_for_the_test: pip install numpy_missing_for_the_test")


def test_pretrained_weights_are_looked_up_in_the_chosen_backends_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    message = problems(["framework=tf", "model.name=resnet50", "model.pretrained=imagenet"])["model.pretrained"]
    assert backend_info("tf").imagenet_files["resnet50"][0] in message and str(tmp_path / "models") in message
    assert "KERAS_HOME" in message and "never downloads" in message
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / backend_info("tf").imagenet_files["resnet50"][0]).write_bytes(b"")
    spec = load_spec(None, ["framework=tf", "model.name=resnet50", "model.pretrained=imagenet"])
    assert backend_info("tf").imagenet_weights_file("resnet50") == tmp_path / "models" / \
        backend_info("tf").imagenet_files["resnet50"][0] and spec.model.pretrained == "imagenet"


def test_pretrained_with_init_from_is_refused_only_where_the_backend_cannot_load_one_after_the_other(
        tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"")
    both = ["model.name=resnet50", "model.pretrained=imagenet", f"finetune.init_from={weights}"]
    message = problems(["framework=tf", *both])["model.pretrained"]
    assert "with framework tf, which does not support it" in message and "or framework torch" in message
    torch_message = problems(["framework=torch", *both])["model.pretrained"]  # resnet50's file is missing here
    assert "resnet50-" in torch_message and "does not support" not in torch_message


def test_the_reference_lists_model_names_per_backend():
    table = reference_markdown()
    torch_models, tf_models = (", ".join(backend_info(name).model_names) for name in ("torch", "tf"))
    assert f"one of {torch_models} (torch); {tf_models} (tf), or 'package.module:function'" in table
    assert "one of adam, adamw, sgd, rmsprop |" in table


def test_keras_zoo_names_kwargs_and_weights_are_checked_in_the_driver_without_tensorflow(tmp_path):
    """keras:<name> is listed, not built: a typo gets the close name, another framework is refused, raykit's
    own constructor arguments are refused in model.kwargs, and a missing weights file is named with its
    directory and a command that fetches it once; TensorFlow is never imported."""
    code = f"""
import os, sys
os.environ["KERAS_HOME"] = {str(tmp_path)!r}
from raykit.spec import SpecError, load_spec

def problems(overrides):
    try:
        load_spec(None, ["framework=tf", *overrides])
    except SpecError as error:
        return dict(error.problems)
    return {{}}

print(repr(problems(["model.name=keras:ResNet5"])))
print(repr(problems(["model.name=keras:ResNet50", "framework=torch"])))
print(repr(problems(["model.name=keras:ResNet50", "model.kwargs={{include_top: true, pooling: avg}}"])))
print(repr(problems(["model.name=keras:EfficientNetB0", "model.pretrained=imagenet"])))
os.makedirs(os.path.join(os.environ["KERAS_HOME"], "models"))
open(os.path.join(os.environ["KERAS_HOME"], "models", "efficientnetb0_notop.h5"), "wb").close()
print(repr(problems(["model.name=keras:EfficientNetB0", "model.pretrained=imagenet", "model.kwargs={{pooling: avg}}"])))
print(sorted(m for m in ("tensorflow", "keras", "torch") if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    typo, other_framework, reserved, missing, found, imported = (eval(line) for line in out.strip().splitlines())
    assert typo["model.name"].startswith("got 'keras:ResNet5' (did you mean 'keras:ResNet50', ")  # closest first
    assert "keras:<name> with <name> one of ConvNeXtBase" in typo["model.name"] and "Xception" in typo["model.name"]
    assert list(typo) == ["model.name"]  # not also model.pretrained
    assert "a keras: model, with framework torch; accepted: framework tf" in other_framework["model.name"]
    assert list(reserved) == ["model.kwargs.include_top"] and "raykit sets itself" in reserved["model.kwargs.include_top"]
    message = missing["model.pretrained"]
    assert f"efficientnetb0_notop.h5 is not in {tmp_path / 'models'}" in message and "never downloads" in message
    assert "keras.applications.EfficientNetB0(weights='imagenet', include_top=False)" in message
    assert found == {} and imported == []


@pytest.mark.parametrize("name", ["timm:resnet18", "torchvision:resnet18"])
def test_a_torch_zoo_name_on_tf_is_refused_naming_the_framework_that_has_it(name):
    # Not taken for a 'module:function' factory (module timm, function resnet18) that fails on the workers.
    with pytest.raises(SpecError) as caught:
        load_spec(None, [f"model.name={name}", "framework=tf"])
    ((field, message),) = [(f, m) for f, m in caught.value.problems if f == "model.name"]
    zoo = name.split(":")[0]
    assert f"a {zoo}: model, with framework tf; accepted: framework torch for {zoo}: models" in message
    assert "keras:<name>" in message


def test_a_backends_model_zoo_gets_every_zoo_check_from_the_rules(tmp_path):
    """One mechanism for every zoo: a backend declares a ModelZoo (names, weights file, fetch command) and the
    spec's rules do the rest, the same for it as for timm:, torchvision: and keras:."""
    weights = tmp_path / "toynet_a.bin"
    zoo = ModelZoo(prefix="toyzoo:", names=lambda: ("toynet_a", "toynet_b", "widenet"), listing="toyzoo.names()",
                   weights_file=lambda name: (weights, weights if weights.is_file() else None),
                   fetch_command=lambda name: f"toyzoo fetch {name}")
    register(BackendInfo(name="toy", implementation="tests.no_such_module:ToyBackend", trainer="data_parallel",
                         model_names=("cnn",), optimizer_names=("adam",), model_zoos=(zoo,)))
    try:
        assert load_spec(None, ["framework=toy", "model.name=toyzoo:widenet"]).model.name == "toyzoo:widenet"
        typo = problems(["framework=toy", "model.name=toyzoo:toynet_bb"])
        assert list(typo) == ["model.name"]
        assert typo["model.name"].startswith("got 'toyzoo:toynet_bb' (did you mean 'toyzoo:toynet_b', 'toyzoo:toynet_a'?)")
        assert "toyzoo:<name> with <name> one of toynet_a, toynet_b, widenet" in typo["model.name"]
        other = problems(["framework=torch", "model.name=toyzoo:widenet"])["model.name"]  # not a module:function
        assert "a toyzoo: model, with framework torch; accepted: framework toy for toyzoo: models" in other
        assert "timm:<name>, torchvision:<name>" in other  # what torch has instead
        missing = problems(["framework=toy", "model.name=toyzoo:toynet_a", "model.pretrained=imagenet"])
        assert list(missing) == ["model.pretrained"]
        assert f"toynet_a.bin is not in {tmp_path} and raykit never downloads" in missing["model.pretrained"]
        assert "toyzoo fetch toynet_a" in missing["model.pretrained"]
        weights.write_bytes(b"")
        load_spec(None, ["framework=toy", "model.name=toyzoo:toynet_a", "model.pretrained=imagenet"])
    finally:
        unregister("toy")
