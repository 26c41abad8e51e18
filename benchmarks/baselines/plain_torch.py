"""The single-process PyTorch loop a user would write by hand, for raykit's loop to be measured against.

The model is the seed's CNN built layer by layer (conv 3x3 + ReLU -> batch norm -> max-pool 2x2 per filter
count, then flatten -> dense + ReLU -> dropout -> dense), the same architecture as raykit's ``cnn``.
Each epoch trains on a fresh shuffle and then evaluates the validation split, as raykit's loop does, so
both time the same work. Images go in as standard NCHW tensors, as raykit's, or with ``channels_last``
in the channels-last layout that ``torch.from_numpy(nhwc).permute(0, 3, 1, 2)`` gives (and, for one
channel, ``.contiguous()`` keeps: a size-1 dimension's stride does not count).

    model = build_cnn((8, 8, 1), 10)
    seconds, val_acc = train(model, x_train, y_train, x_val, y_val, epochs=3, batch_size=64, lr=1e-3)
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from torch import nn


def build_cnn(input_shape: tuple[int, int, int], num_classes: int, filters=(32, 64, 128), hidden=(128,),
              dropout: float = 0.5, momentum: float = 0.1) -> nn.Sequential:
    height, width, channels = input_shape
    layers: list[nn.Module] = []
    for out in filters:
        layers += [nn.Conv2d(channels, out, 3, padding=1), nn.ReLU(inplace=True),
                   nn.BatchNorm2d(out, momentum=momentum), nn.MaxPool2d(2, ceil_mode=True)]
        channels, height, width = out, math.ceil(height / 2), math.ceil(width / 2)
    layers.append(nn.Flatten())
    features = channels * height * width
    for size in hidden:
        layers += [nn.Linear(features, size), nn.ReLU(inplace=True)]
        features = size
    return nn.Sequential(*layers, nn.Dropout(dropout), nn.Linear(features, num_classes))


def train(model: nn.Module, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, *,
          epochs: int, batch_size: int, lr: float, seed: int = 0, channels_last: bool = False
          ) -> tuple[list[float], float]:
    """Adam on NHWC float32 images in [0, 1]; returns each epoch's seconds (training + validation) and the
    last validation accuracy."""
    x, xv = (_layout(images, channels_last) for images in (x_train, x_val))
    y, yv = torch.from_numpy(y_train), torch.from_numpy(y_val)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    seconds = []
    for _ in range(epochs):
        started = time.perf_counter()
        model.train()
        for batch in torch.randperm(len(y), generator=generator).split(batch_size):
            loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            correct = sum(int((model(xv[i:i + 1024]).argmax(1) == yv[i:i + 1024]).sum())
                          for i in range(0, len(yv), 1024))
        seconds.append(time.perf_counter() - started)
    return seconds, correct / len(yv)


def _layout(nhwc: np.ndarray, channels_last: bool) -> torch.Tensor:
    nchw = torch.from_numpy(nhwc).permute(0, 3, 1, 2)
    return nchw if channels_last else nchw.clone(memory_format=torch.contiguous_format)
