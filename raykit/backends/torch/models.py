"""PyTorch models built from the spec's ``model`` section."""

from __future__ import annotations

import math

import torch
from torch import nn

from raykit.backends.torch import zoo
from raykit.registry import Registry
from raykit.spec import ModelSpec

MODELS = Registry("model.name", user_factories=True)


def build_model(spec: ModelSpec, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """Build ``spec.name`` for images of ``input_shape`` (H, W, C) and ``num_classes`` outputs, with random
    weights (``model.pretrained`` and ``finetune.init_from`` are loaded by :mod:`finetune`).

    ``timm:<name>`` and ``torchvision:<name>`` come from the zoos (:mod:`raykit.backends.torch.zoo`); a user
    factory ``package.module:function`` is called as ``function(spec, input_shape, num_classes,
    **spec.kwargs)``.
    """
    if zoo.split_name(spec.name):
        model = zoo.build(spec, input_shape, num_classes)
    else:
        factory = MODELS.get(spec.name)
        if spec.name in MODELS.names():
            model = factory(spec, input_shape, num_classes)
        else:  # a user factory: model.kwargs are its own keyword arguments
            model = factory(spec, input_shape, num_classes, **spec.kwargs)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model.name: factory {spec.name!r} returned {type(model).__name__}; "
                        "accepted: a torch.nn.Module")
    return model


def _dense_head(in_features: int, spec: ModelSpec, num_classes: int) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Flatten()]
    for width in spec.hidden:
        layers += [nn.Linear(in_features, width), nn.ReLU(inplace=True)]
        in_features = width
    layers += [nn.Dropout(spec.dropout), nn.Linear(in_features, num_classes)]
    return layers


@MODELS.register("mlp")
def mlp(spec: ModelSpec, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """Flatten -> [dense + ReLU] * len(hidden) -> dropout -> dense head (logits)."""
    return nn.Sequential(*_dense_head(math.prod(input_shape), spec, num_classes))


@MODELS.register("cnn")
def cnn(spec: ModelSpec, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """The seed's CNN: per filter count, conv 3x3 (same padding) + ReLU -> batch norm -> max-pool 2x2,
    then flatten -> dense ``hidden`` + ReLU -> dropout -> dense head (logits; softmax lives in the loss).

    Pooling rounds up, so any input size works (8x8 becomes 4, 2, 1).
    """
    height, width, channels = input_shape
    layers: list[nn.Module] = []
    for filters in spec.filters:
        layers += [
            nn.Conv2d(channels, filters, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.BatchNorm2d(filters, momentum=spec.batchnorm_momentum),
            nn.MaxPool2d(2, ceil_mode=True),
        ]
        channels, height, width = filters, math.ceil(height / 2), math.ceil(width / 2)
    return nn.Sequential(*layers, *_dense_head(channels * height * width, spec, num_classes))


def to_model_layout(images: torch.Tensor) -> torch.Tensor:
    """NHWC (raykit's data layout) -> NCHW (torch's conv layout), with standard NCHW strides.

    ``permute().contiguous()`` is not enough: with one channel the permuted view already counts as
    contiguous, keeps channels-last strides, and DDP then warns about mismatched gradient strides.
    """
    n, h, w, c = images.shape
    return torch.empty((n, c, h, w), dtype=images.dtype).copy_(images.permute(0, 3, 1, 2))


def _resnet(arch: str):
    def factory(spec: ModelSpec, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
        """torchvision's ``arch`` (random weights; ``model.pretrained`` loads the cached ImageNet ones in
        finetune), with the stem adapted to the input: its channel count, and for small images (or
        ``stem: small``) a 3x3 stride-1 first conv without max-pool, so 8x8 or 32x32 inputs keep detail."""
        import torchvision

        # model.kwargs reach torchvision's constructor and win over raykit's num_classes.
        model = getattr(torchvision.models, arch)(**{"weights": None, "num_classes": num_classes, **spec.kwargs})
        height, width, channels = input_shape
        small = spec.stem == "small" or (spec.stem == "auto" and min(height, width) < 64)
        if small:
            model.conv1 = nn.Conv2d(channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
            model.maxpool = nn.Identity()
        elif channels != 3:
            model.conv1 = nn.Conv2d(channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        if spec.dropout:  # on the pooled features, so the head keeps torchvision's key names (fc.weight)
            model.avgpool = nn.Sequential(model.avgpool, nn.Dropout(spec.dropout))
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.momentum = spec.batchnorm_momentum
        return model

    return factory


for _arch in ("resnet18", "resnet34", "resnet50"):
    MODELS.register(_arch)(_resnet(_arch))
