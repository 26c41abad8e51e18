"""PyTorch backend: models, augment, finetune, checkpoint, export, and ``backend.TorchBackend``.

``INFO`` holds the facts shared code needs without importing torch.
"""

from __future__ import annotations

import os
from pathlib import Path

from raykit.backends.base import GPU, GRAD_ACCUM, PRETRAINED_THEN_INIT, BackendInfo
from raykit.backends.torch.zoo import MODEL_ZOOS


def weights_cache() -> Path:
    """torch.hub's checkpoint cache: ``$TORCH_HOME/hub/checkpoints`` (default ``~/.cache/torch``)."""
    home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "torch")
    return Path(home).expanduser() / "hub" / "checkpoints"


def _refusals(spec) -> list[tuple[str, str]]:
    """``model.kwargs`` for a built-in model that takes none (zoo names are the spec's rules' to check)."""
    if spec.model.kwargs and spec.model.name in ("mlp", "cnn"):
        return [("model.kwargs", f"got {spec.model.kwargs!r} for model.name={spec.model.name!r}, which takes "
                                 "no constructor arguments; accepted with it: {} (model.kwargs reaches zoo models, "
                                 "resnet18/34/50 and user factories)")]
    return []


def _weights_check(spec, input_shape, num_classes: int) -> list[tuple[str, str]]:
    """The starting weights on the driver, once the data is planned (imports torch)."""
    from raykit.backends.torch.weights_fit import driver_problems

    return driver_problems(spec, input_shape, num_classes)


INFO = BackendInfo(
    name="torch",
    implementation="raykit.backends.torch.backend:TorchBackend",
    trainer="torch",
    description="PyTorch, data parallel with DDP under Ray Train's TorchTrainer",
    model_names=("mlp", "cnn", "resnet18", "resnet34", "resnet50"),
    model_zoos=MODEL_ZOOS,  # timm:<name>, torchvision:<name>
    optimizer_names=("adam", "adamw", "sgd", "rmsprop"),
    # torchvision's IMAGENET1K_V1 files (and V2 for resnet50), as torch.hub names them in its cache.
    imagenet_files={"resnet18": ("resnet18-f37072fd.pth",), "resnet34": ("resnet34-b627a593.pth",),
                    "resnet50": ("resnet50-11ad3fa6.pth", "resnet50-0676ba61.pth")},
    weights_cache=weights_cache,
    export_formats=("torchscript", "onnx"),
    capabilities=frozenset({GRAD_ACCUM, GPU, PRETRAINED_THEN_INIT}),  # init_from loads after pretrained
    refusals=_refusals,
    weights_check=_weights_check,
    required_modules=("torch", "torchvision"),
    install_name="PyTorch",
    install_extra="torch",
)
