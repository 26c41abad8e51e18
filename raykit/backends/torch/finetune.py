"""Fine-tuning: initial weights from a checkpoint or state-dict file, key remapping, a new head,
freezing (first N layers or by name), gradual unfreezing and discriminative learning rates.

A "layer" is a module that owns parameters directly (conv, batch norm, linear), counted in
registration order. The head is the last such layer; it is never frozen.
"""

from __future__ import annotations

import dataclasses
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from raykit import storage
from raykit.backends import backend_info
from raykit.backends.torch import zoo
from raykit.checkpoint import MANIFEST
from raykit.spec import FinetuneSpec, RunSpec

ALWAYS_STRIPPED = ("module.", "_orig_mod.")  # DDP / DataParallel and torch.compile wrappers


@dataclass
class LoadReport:
    """What loading initial weights did; ``loaded`` keys were copied into the model. ``after`` is the
    report of the weights loaded before these (the pretrained ones, when ``finetune.init_from`` follows)."""

    source: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # in the model, not in the file: kept as initialised
    unexpected: list[str] = field(default_factory=list)  # in the file, not in the model
    mismatched: list[str] = field(default_factory=list)  # same name, other shape (e.g. a new head)
    after: "LoadReport | None" = None

    def summary(self) -> str:
        lines = [self.after.summary()] if self.after else []
        then = " (finetune.init_from, loaded after the pretrained weights)" if self.after else ""
        lines.append(f"loaded {len(self.loaded)} tensors from {self.source}{then}")
        for label, keys in (("kept as initialised (not in the file)", self.missing),
                            ("ignored (not in the model)", self.unexpected),
                            ("re-initialised (shape differs, e.g. a new head)", self.mismatched)):
            if keys:
                lines.append(f"  {label}: {', '.join(keys[:8])}{' ...' if len(keys) > 8 else ''}")
        return "\n".join(lines)


def pretrained_weights_file(spec: RunSpec) -> str:
    """The cached ImageNet weights file of a registered resnet (zoo models: :mod:`zoo`)."""
    path = backend_info(spec.framework).imagenet_weights_file(spec.model.name)
    if path is None:  # validated on the driver; a worker node may lack the cache
        raise FileNotFoundError(f"model.pretrained: ImageNet weights for {spec.model.name} are not in this "
                                "node's torch hub cache")
    return str(path)


def read_state_dict(location: str) -> dict[str, torch.Tensor]:
    """Tensors from a raykit checkpoint directory or a state-dict file (local path or fsspec URI), loaded
    as data only: ``.safetensors`` by safetensors (tensors only, by its format), ``.pt``/``.pth`` by
    ``torch.load(weights_only=True)``; ``{"state_dict": ...}`` / ``{"model": ...}`` wrappers are opened."""
    from raykit.backends.torch.checkpoint import load_data, load_weights

    if "://" not in location and Path(location).expanduser().is_dir():
        return load_weights(str(Path(location).expanduser()))
    if "://" in location and storage.exists(storage.join(location, MANIFEST)):  # a remote raykit checkpoint
        with tempfile.TemporaryDirectory(prefix="raykit-init-") as local:
            return load_weights(storage.download_dir(location, local))
    if _is_safetensors(location):
        from safetensors.torch import load, load_file

        local = "://" not in location or location.startswith("file://")
        return load_file(Path(location.removeprefix("file://")).expanduser()) if local else load(_read_bytes(location))
    state = load_data(_read_bytes(location), f"finetune.init_from: {location!r}")
    for wrapper in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"finetune.init_from: {location!r} does not hold a state dict of tensors; accepted: a file "
                         "written by torch.save(model.state_dict(), path)")
    return state


def _is_safetensors(location: str) -> bool:
    return location.lower().rstrip("/").endswith(".safetensors")


def _read_bytes(location: str) -> bytes:
    if "://" in location and not location.startswith("file://"):
        import fsspec

        with fsspec.open(location, "rb") as handle:
            return handle.read()
    return Path(location.removeprefix("file://")).expanduser().read_bytes()


def remap_keys(state: dict[str, torch.Tensor], prefix_map: dict[str, str]) -> dict[str, torch.Tensor]:
    """Strip wrapper prefixes (``module.``, ``_orig_mod.``), then rename prefixes as ``prefix_map`` says."""
    remapped = {}
    for key, value in state.items():
        stripped = True
        while stripped:
            stripped = False
            for prefix in ALWAYS_STRIPPED:
                if key.startswith(prefix):
                    key, stripped = key[len(prefix):], True
        for old, new in prefix_map.items():
            if key.startswith(old):
                key = new + key[len(old):]
                break
        remapped[key] = value
    return remapped


def load_matching(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> LoadReport:
    """Copy every tensor whose name and shape match (``strict=False`` semantics, shapes checked too)."""
    own = model.state_dict()
    report = LoadReport(source=source)
    matched = {}
    for key, value in state.items():
        if key not in own:
            report.unexpected.append(key)
        elif own[key].shape != value.shape:
            report.mismatched.append(key)
        else:
            matched[key] = value
            report.loaded.append(key)
    report.missing = [key for key in own if key not in state]
    if not matched:
        raise ValueError(f"finetune.init_from: no tensor of {source!r} matches the model "
                         f"({len(state)} keys in the file, e.g. {list(state)[:3]}; model keys e.g. "
                         f"{list(own)[:3]}); use finetune.key_prefix_map to rename prefixes")
    model.load_state_dict(matched, strict=False)
    return report


def load_initial_weights(spec: RunSpec, model: nn.Module) -> LoadReport | None:
    """Load the starting weights the spec names into ``model`` (before DDP wrapping): ``model.pretrained``,
    then ``finetune.init_from`` over them when both are set. Returns the last load's report (the first one
    chained as its ``after``), or None when the model starts from scratch."""
    report = None
    if spec.model.pretrained == "imagenet":
        if zoo.split_name(spec.model.name):
            source, state, head = zoo.load_pretrained(spec, model, _input_channels(model), _num_classes(model))
            report = (load_matching(model, state, source) if state is not None else  # timm loaded in place
                      LoadReport(source, loaded=[k for k in model.state_dict() if k not in head], mismatched=head))
        else:
            source = pretrained_weights_file(spec)
            report = load_matching(model, remap_keys(read_state_dict(source), {}), source)
    if spec.finetune.init_from != "scratch":
        source = spec.finetune.init_from
        state = remap_keys(read_state_dict(source), spec.finetune.key_prefix_map)
        report = dataclasses.replace(load_matching(model, state, source), after=report)
    return report


def _input_channels(model: nn.Module) -> int:
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return first.in_channels if first is not None else 3


def _num_classes(model: nn.Module) -> int:
    """The classifier's outputs: the last parameterised layer's (timm models also say it directly)."""
    if isinstance(getattr(model, "num_classes", None), int):
        return model.num_classes
    head = parameterised_layers(model)[-1][1]
    return getattr(head, "out_features", None) or getattr(head, "out_channels", 0)


def parameterised_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Modules that own parameters directly, in registration order (the unit of freezing)."""
    return [(name, module) for name, module in model.named_modules()
            if any(True for _ in module.parameters(recurse=False))]


def frozen_layer_names(model: nn.Module, finetune: FinetuneSpec) -> list[str]:
    """Layers to freeze: the first ``freeze_first_n`` plus those matching ``freeze_patterns``; never the head."""
    layers = [name for name, _ in parameterised_layers(model)]
    head = layers[-1:]
    patterns = [re.compile(p) for p in finetune.freeze_patterns]
    chosen = set(layers[: finetune.freeze_first_n])
    chosen |= {name for name in layers if any(p.search(name) for p in patterns)}
    return [name for name in layers if name in chosen and name not in head]


def apply_freezing(model: nn.Module, frozen: list[str]) -> None:
    """Set ``requires_grad`` from ``frozen`` (every other layer trains)."""
    frozen_set = set(frozen)
    for name, module in parameterised_layers(model):
        for parameter in module.parameters(recurse=False):
            parameter.requires_grad_(name not in frozen_set)


def keep_frozen_norms_in_eval(model: nn.Module, frozen: list[str]) -> None:
    """After ``model.train()``: frozen batch-norm layers keep their running statistics (eval mode)."""
    frozen_set = set(frozen)
    for name, module in model.named_modules():
        if name in frozen_set and isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


def parameter_groups(model: nn.Module, lr: float, backbone_lr_mult: float) -> list[dict]:
    """The head at ``lr``, everything else at ``lr * backbone_lr_mult`` (all parameters, frozen or not,
    so that unfreezing later needs no new optimizer)."""
    layers = parameterised_layers(model)
    head_name, head = layers[-1]
    head_ids = {id(p) for p in head.parameters(recurse=False)}
    backbone = [p for p in model.parameters() if id(p) not in head_ids]
    groups = [{"params": list(head.parameters(recurse=False)), "lr": lr, "name": f"head ({head_name})"}]
    if backbone:
        groups.append({"params": backbone, "lr": lr * backbone_lr_mult, "name": "backbone"})
    return groups
