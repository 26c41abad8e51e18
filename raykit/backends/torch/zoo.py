"""The PyTorch model zoos: ``model.name: timm:<name>`` (any of ``timm.list_models()``) and
``torchvision:<name>`` (any classification model of ``torchvision.models.list_models(module=torchvision.models)``),
their constructor arguments (``model.kwargs``) and their ImageNet weights in each library's own cache.

:data:`MODEL_ZOOS` gives the spec's rules (:mod:`raykit.spec.rules`) what they check for every zoo alike: the
names, checked against the library's list (importing the library whose name the spec uses, never TensorFlow,
and building no model), and where a zoo model's weights file is looked for in the cache.

Where the weights live (``model.pretrained: imagenet``):

* torchvision: torch.hub's cache, ``$TORCH_HOME/hub/checkpoints/<file name of the weights enum's url>``
  (the ``DEFAULT`` weights of the model's enum), loaded by torchvision's own ``get_model(weights=...)``.
* timm: the Hugging Face hub cache, ``$HF_HOME/hub/models--timm--<name>.<tag>/snapshots/<revision>/
  model.safetensors`` with the revision in ``refs/main``, loaded by timm's own ``load_pretrained``.

``HF_HUB_OFFLINE=1`` means offline for both (torch.hub has no switch of its own): a missing file is then an
error when the spec is read, naming the path and the one command that fetches it. Otherwise ``raykit.train``
fetches a missing file once, through the library's own download function, after planning the data and
before Ray starts (:mod:`weights_fit`); reading or validating a spec never downloads.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from raykit.backends.base import ModelZoo, Problems

ZOOS = ("timm", "torchvision")


def split_name(name: str) -> tuple[str, str] | None:
    """``("timm", "resnet50")`` for ``"timm:resnet50"``; None for a name outside the zoos."""
    zoo, colon, arch = name.partition(":")
    return (zoo, arch) if colon and zoo in ZOOS else None


@functools.lru_cache(maxsize=None)
def zoo_names(zoo: str) -> tuple[str, ...]:
    """Every model name the library lists (its classification models), without building one."""
    if zoo == "timm":
        import timm

        return tuple(timm.list_models())
    import torchvision

    return tuple(torchvision.models.list_models(module=torchvision.models))


def _listing(zoo: str) -> str:
    return ("timm.list_models()" if zoo == "timm"
            else "torchvision.models.list_models(module=torchvision.models)")


# --- building -------------------------------------------------------------------------------------

def build(spec, input_shape: tuple[int, int, int], num_classes: int):
    """A zoo model with random weights, its classifier sized to ``num_classes`` and its input to the data's
    channels (``model.pretrained`` is loaded later, by :func:`load_pretrained`).

    timm: ``timm.create_model(name, num_classes=, in_chans=, **model.kwargs)``. torchvision:
    ``get_model(name, num_classes=, **model.kwargs)``; for data that is not 3-channel the first 3-channel
    convolution is replaced by one with the data's channels (torchvision models have no such argument).
    A key of ``model.kwargs`` overrides raykit's own argument of the same name.
    """
    zoo, arch = split_name(spec.name)
    channels = input_shape[2]
    if zoo == "timm":
        import timm

        return timm.create_model(arch, **{"num_classes": num_classes, "in_chans": channels, **spec.kwargs})
    import torchvision

    model = torchvision.models.get_model(arch, **{"num_classes": num_classes, **spec.kwargs})
    if channels != 3:
        adapt_input_conv(model, channels)
    return model


def first_conv_name(model) -> str | None:
    """The name of the model's first convolution that takes 3 channels (its image input)."""
    from torch import nn

    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and module.in_channels == 3:
            return name
    return None


def adapt_input_conv(model, channels: int) -> None:
    """Replace the first 3-channel convolution by one taking ``channels``, as timm's ``in_chans`` does."""
    from torch import nn

    name = first_conv_name(model)
    if name is None:
        raise ValueError(f"model: cannot adapt the model to {channels}-channel images: it has no 3-channel "
                         "Conv2d; accepted: 3-channel data (data.color_mode: rgb)")
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    old = parent.get_submodule(child)
    new = nn.Conv2d(channels, old.out_channels, old.kernel_size, old.stride, old.padding, old.dilation,
                    old.groups, old.bias is not None, old.padding_mode)
    setattr(parent, child, new)


def adapt_rgb_kernel(weight, channels: int):
    """Pretrained RGB kernels for ``channels`` inputs: summed for 1, else repeated and scaled (timm's rule)."""
    if channels == 1:
        return weight.sum(dim=1, keepdim=True)
    repeat = -(-channels // 3)
    return weight.repeat(1, repeat, 1, 1)[:, :channels] * (3 / channels)


# --- ImageNet weights in the libraries' caches ------------------------------------------------------

def offline() -> bool:
    """``HF_HUB_OFFLINE`` set to a true value: no download is attempted, for timm or torchvision."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache: ``$HF_HUB_CACHE``, or ``$HF_HOME/hub`` (default ``~/.cache/huggingface``)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "huggingface")
    return Path(home).expanduser() / "hub"


def timm_hub_id(arch: str) -> str:
    """``timm/<name>.<tag>``: the Hugging Face repository of the model's default pretrained weights."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(arch)
    if cfg is None or not cfg.hf_hub_id:
        raise LookupError(f"model.pretrained: timm has no ImageNet weights on the Hugging Face hub for {arch!r}")
    return cfg.hf_hub_id


def timm_weights_file(arch: str) -> tuple[Path, Path | None]:
    """(where the file is looked for, the file if it is there). The snapshot named by ``refs/main`` is
    searched for ``model.safetensors``, then ``pytorch_model.bin``, as timm asks the hub for them."""
    repo = hf_hub_cache() / ("models--" + timm_hub_id(arch).replace("/", "--"))
    ref = repo / "refs" / "main"
    revision = ref.read_text().strip() if ref.is_file() else "<revision in refs/main>"
    snapshot = repo / "snapshots" / revision
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (snapshot / name).is_file():
            return snapshot / name, snapshot / name
    return snapshot / "model.safetensors", None


def torchvision_weights(arch: str):
    """The ``DEFAULT`` member of the model's weights enum (its best ImageNet weights)."""
    import torchvision

    try:
        return torchvision.models.get_model_weights(arch).DEFAULT
    except (ValueError, AttributeError, KeyError) as exc:
        raise LookupError(f"model.pretrained: torchvision has no ImageNet weights for {arch!r}") from exc


def torchvision_weights_file(arch: str) -> tuple[Path, Path | None]:
    """(where the file is looked for, the file if it is there): torch.hub names it after the url."""
    import torch.hub

    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(torchvision_weights(arch).url)
    return path, (path if path.is_file() else None)


def weights_file(name: str) -> tuple[Path, Path | None]:
    """(where the ImageNet weights of zoo model ``name`` are looked for, the file if it is there)."""
    zoo, arch = split_name(name)
    return timm_weights_file(arch) if zoo == "timm" else torchvision_weights_file(arch)


def fetch_command(name: str) -> str:
    """The one command that puts the weights of ``name`` in its library's cache."""
    zoo, arch = split_name(name)
    if zoo == "timm":
        return f"hf download {timm_hub_id(arch)} model.safetensors"
    return (f"python -c \"import torchvision; torchvision.models.get_model_weights('{arch}').DEFAULT"
            ".get_state_dict(progress=True)\"")


def _zoo(zoo: str) -> ModelZoo:
    """The zoo's facts for the spec's rules (which import nothing of it until a name is checked)."""
    return ModelZoo(prefix=f"{zoo}:", names=functools.partial(zoo_names, zoo), listing=_listing(zoo),
                    weights_file=lambda arch: weights_file(f"{zoo}:{arch}"),
                    fetch_command=lambda arch: fetch_command(f"{zoo}:{arch}"),
                    fetched_when_missing=lambda: not offline(),
                    why_not_fetched=lambda: "HF_HUB_OFFLINE is set, so nothing is downloaded")


MODEL_ZOOS = tuple(_zoo(zoo) for zoo in ZOOS)


def fetch(name: str) -> None:
    """Download the weights of ``name`` into its library's cache, through the library's own function."""
    zoo, arch = split_name(name)
    if zoo == "timm":
        from huggingface_hub import hf_hub_download

        hf_hub_download(timm_hub_id(arch), "model.safetensors", cache_dir=str(hf_hub_cache()))
    else:
        torchvision_weights(arch).get_state_dict(progress=False, weights_only=True)


def fetch_problems(name: str) -> Problems:
    """The driver's half of ``model.pretrained``, before Ray starts: a file missing from the cache is
    downloaded once now, unless offline (then reading the spec has refused it already). Reading or
    validating a spec never downloads."""
    from raykit.spec.rules import missing_weights_problem

    expected, found = weights_file(name)
    if found is not None:
        return []
    if offline():
        reason = "HF_HUB_OFFLINE is set, so nothing is downloaded"
    else:
        try:
            fetch(name)
            if weights_file(name)[1] is not None:
                return []
        except Exception as exc:  # no network, a proxy, a moved file: the message below says what to do
            reason = f"downloading it failed ({type(exc).__name__}: {exc})"
        else:
            reason = "the download left no file there"
    return [missing_weights_problem(name, expected, reason, fetch_command(name))]


def load_pretrained(spec, model, channels: int, num_classes: int) -> tuple[str, dict | None, list[str]]:
    """The zoo model's ImageNet weights, through the library's own loading code: ``(source, state, head)``.

    torchvision: ``state`` is the state dict of ``get_model(name, weights=DEFAULT)`` (its first conv's RGB
    kernels adapted to ``channels``), for the caller to load where names and shapes match. timm: ``model``
    is loaded in place by timm's ``load_pretrained`` (``state`` None); ``head`` lists the classifier's
    tensors it left fresh because ``num_classes`` differs from ImageNet's.
    """
    zoo, arch = split_name(spec.model.name)
    expected, found = weights_file(spec.model.name)
    if found is None and offline():
        raise FileNotFoundError(f"model.pretrained: {expected} is not on this node and HF_HUB_OFFLINE is set; "
                                f"fetch it once with: {fetch_command(spec.model.name)}")
    if zoo == "timm":
        return _load_timm(model, arch, found, channels, num_classes, spec.model.kwargs)
    import torchvision

    reference = torchvision.models.get_model(arch, weights=torchvision_weights(arch), **spec.model.kwargs)
    state = reference.state_dict()
    conv = first_conv_name(reference)
    if channels != 3 and conv is not None:
        state[f"{conv}.weight"] = adapt_rgb_kernel(state[f"{conv}.weight"], channels)
    return str(found or expected), state, []


def _load_timm(model, arch: str, found: Path | None, channels: int, num_classes: int, kwargs: dict):
    from timm.models import load_pretrained as timm_load_pretrained

    cfg = dict(model.pretrained_cfg)
    if found is not None:  # the cached file itself: no hub call at all
        cfg.update(file=str(found), source="")
    classes = kwargs.get("num_classes", num_classes)
    timm_load_pretrained(model, pretrained_cfg=cfg, num_classes=classes, in_chans=kwargs.get("in_chans", channels),
                         cache_dir=str(hf_hub_cache()))
    # timm loads every tensor but a classifier sized for other classes, which keeps its fresh weights.
    classifier = cfg.get("classifier") or ()
    prefixes = [f"{c}." for c in ([classifier] if isinstance(classifier, str) else classifier)]
    head = ([k for k in model.state_dict() if any(k.startswith(p) for p in prefixes)]
            if classes != cfg.get("num_classes") else [])
    return (str(found) if found else f"the Hugging Face hub ({timm_hub_id(arch)})"), None, head
