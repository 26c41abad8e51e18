"""The driver's checks of the starting weights, once the data is planned and before Ray starts: a user
factory takes its ``model.kwargs``, a zoo model's ImageNet file is in its cache (:mod:`zoo`), and
``finetune.init_from`` fits the model. torch is imported only when there is something to check.

The fit: the file's tensor names and shapes (a safetensors header is read alone; a ``.pt``/``.pth`` file or
raykit checkpoint is loaded as data) against the model built on the ``meta`` device (no memory, no
initialisation work). A file fits when some tensors match by name and shape and every tensor both have
differs at most in the head (the last parameterised layer, e.g. 1000 ImageNet classes against the data's)
or the first convolution (raykit's small stem or another channel count); those are re-initialised, as
the load says.
"""

from __future__ import annotations

from raykit.backends.base import Problems
from raykit.checkpoint import CheckpointError

FIELD = "finetune.init_from"


def safetensors_shapes(location: str) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes from a safetensors file's header (its first 8 + N bytes only)."""
    from raykit.checks import safetensors_header

    return {name: tuple(entry["shape"]) for name, entry in safetensors_header(location).items()
            if name != "__metadata__"}


def file_shapes(location: str) -> dict[str, tuple[int, ...]]:
    from raykit.backends.torch.finetune import _is_safetensors, read_state_dict

    if _is_safetensors(location):
        return safetensors_shapes(location)
    return {name: tuple(tensor.shape) for name, tensor in read_state_dict(location).items()}


def driver_problems(spec, input_shape: tuple[int, int, int], num_classes: int) -> Problems:
    """The starting weights, checked on the driver once the data is planned: a zoo model's ImageNet file
    (fetched now when missing and the network is allowed) and ``finetune.init_from`` fitting the model."""
    from raykit.backends.torch import zoo

    problems = factory_kwargs_problems(spec)
    if problems:
        return problems
    if spec.model.pretrained == "imagenet" and zoo.split_name(spec.model.name):
        problems = zoo.fetch_problems(spec.model.name)
        if problems:
            return problems
    return fit_problems(spec, input_shape, num_classes)


def factory_kwargs_problems(spec) -> Problems:
    """A user factory given ``model.kwargs`` must take them: ``function(spec, input_shape, num_classes,
    **kwargs)`` is bound to its signature (the factory is imported here, on the driver, only then)."""
    import inspect

    from raykit.backends.torch import zoo
    from raykit.registry import import_factory

    name = spec.model.name
    if not spec.model.kwargs or ":" not in name or zoo.split_name(name):  # registered names have no ':'
        return []
    try:
        factory = import_factory(name, "model.name")
        inspect.signature(factory).bind(spec.model, (1, 1, 1), 2, **spec.model.kwargs)
    except ImportError as exc:
        return [("model.name", str(exc))]
    except TypeError as exc:
        return [("model.kwargs", f"got {spec.model.kwargs!r}, which {name} does not take ({exc}); accepted: "
                                 f"keyword arguments of {name}{inspect.signature(factory)} after its first three")]
    return []


def fit_problems(spec, input_shape: tuple[int, int, int], num_classes: int) -> Problems:
    """``[(finetune.init_from, message)]`` when the file cannot initialise the spec's model, else []."""
    if spec.finetune.init_from == "scratch":
        return []
    import torch

    from raykit.backends.torch.finetune import parameterised_layers, remap_keys
    from raykit.backends.torch.models import build_model

    location = spec.finetune.init_from
    try:
        with torch.device("meta"):
            model = build_model(spec.model, tuple(input_shape), num_classes)
    except Exception:  # a factory that cannot build on meta: the worker's load reports instead
        return []
    own = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    try:
        shapes = remap_keys(file_shapes(location), spec.finetune.key_prefix_map)
    except (CheckpointError, ValueError, OSError) as exc:  # not a state dict, pickled code: the file's fault
        return [(FIELD, str(exc).removeprefix(f"{FIELD}: "))]
    layers = parameterised_layers(model)
    adaptable = {f"{layers[-1][0]}.{p}" for p, _ in layers[-1][1].named_parameters(recurse=False)}
    first_conv = next((name for name, m in layers if isinstance(m, torch.nn.Conv2d)), None)
    adaptable.add(f"{first_conv}.weight")
    if not any(own.get(name) == shape for name, shape in shapes.items()):
        return [(FIELD, f"got {location!r}: none of its {len(shapes)} tensors matches the model "
                        f"{spec.model.name!r} by name and shape (file e.g. {_some(shapes)}; model e.g. "
                        f"{_some(own)}); accepted: weights of this architecture (finetune.key_prefix_map renames "
                        "prefixes)")]
    # In the model's order: a safetensors header lists names sorted, a state dict as saved.
    differ = [name for name, shape in own.items() if name in shapes and shapes[name] != shape
              and name not in adaptable]
    if differ:
        listed = "; ".join(f"{name}: file {list(shapes[name])}, model {list(own[name])}" for name in differ[:3])
        return [(FIELD, f"got {location!r}, which does not fit model {spec.model.name!r}: {len(differ)} tensors "
                        f"differ in shape, first {listed}; accepted: weights of the same architecture (only the "
                        "head and the first convolution may differ; they are re-initialised)")]
    return []


def _some(shapes: dict) -> str:
    return ", ".join(f"{name} {list(shape)}" for name, shape in list(shapes.items())[:3])
