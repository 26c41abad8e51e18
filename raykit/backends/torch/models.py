"""PyTorch models built from the spec's ``model`` section."""

from __future__ import annotations

import math

import torch
from torch import nn

from raykit.registry import Registry
from raykit.spec import ModelSpec

MODELS = Registry("model.name")


def build_model(spec: ModelSpec, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """Build ``spec.name`` for images of ``input_shape`` (H, W, C) and ``num_classes`` outputs."""
    factory = MODELS.get(spec.name)
    model = factory(spec, input_shape, num_classes)
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
