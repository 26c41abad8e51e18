"""PyTorch box kernels of the augmentation catalogue: ``random_resized_crop`` and ``random_erasing`` draw one
box per sample as torchvision's RandomResizedCrop / RandomErasing do (10 tries of an area fraction and a
log-uniform aspect ratio), batched: all tries are drawn at once and each sample keeps its first box that fits.

A box is a (N, 4) int64 tensor of rows ``(top, left, height, width)``::

    resized_crop(images, torch.tensor([[0, 0, 4, 4]]))   # the top-left 4x4 pixels, resized to H x W
"""

from __future__ import annotations

import math

import torch

from raykit.augment import BOX_TRIES, fallback_crop


def _draw_uniform(generator: torch.Generator, shape: tuple, low: float, high: float, device) -> torch.Tensor:
    values = torch.rand(shape, generator=generator, device=generator.device)
    return (values * (high - low) + low).to(device)


def draw_box_sizes(generator: torch.Generator, n: int, height: int, width: int, scale: list[float],
                   ratio: list[float], device) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, BOX_TRIES) sizes ``(long side along the ratio, other side)``: ``round(sqrt(area * aspect))`` and
    ``round(sqrt(area / aspect))`` for area fractions uniform in ``scale`` and log-uniform aspects."""
    area = _draw_uniform(generator, (n, BOX_TRIES), *scale, device) * (height * width)
    aspect = torch.exp(_draw_uniform(generator, (n, BOX_TRIES), math.log(ratio[0]), math.log(ratio[1]), device))
    return torch.sqrt(area * aspect).round().long(), torch.sqrt(area / aspect).round().long()


def first_fit(heights: torch.Tensor, widths: torch.Tensor, fits: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each sample's first try that fits: ``(height, width, found)``, each (N,)."""
    first = fits.long().argmax(dim=1, keepdim=True)  # 0 when none fits; ``found`` says so
    return heights.gather(1, first)[:, 0], widths.gather(1, first)[:, 0], fits.any(dim=1)


def place(generator: torch.Generator, heights: torch.Tensor, widths: torch.Tensor, height: int, width: int
          ) -> torch.Tensor:
    """(N, 4) boxes at uniform integer offsets: top in [0, H - h], left in [0, W - w]."""
    u = _draw_uniform(generator, (len(heights), 2), 0.0, 1.0, heights.device)
    top = (u[:, 0] * (height - heights + 1)).floor().long().clamp(max=height - heights)
    left = (u[:, 1] * (width - widths + 1)).floor().long().clamp(max=width - widths)
    return torch.stack([top, left, heights, widths], dim=1)


def crop_boxes(generator: torch.Generator, images: torch.Tensor, scale: list[float], ratio: list[float]
               ) -> torch.Tensor:
    """RandomResizedCrop's boxes: width ``round(sqrt(area * aspect))``, inside the image, else the centre
    crop of :func:`raykit.augment.fallback_crop`."""
    n, _, height, width = images.shape
    widths, heights = draw_box_sizes(generator, n, height, width, scale, ratio, images.device)
    fits = (widths > 0) & (widths <= width) & (heights > 0) & (heights <= height)
    heights, widths, found = first_fit(heights, widths, fits)
    boxes = place(generator, heights, widths, height, width)
    fallback = torch.tensor(fallback_crop(height, width, ratio), device=images.device)
    return torch.where(found[:, None], boxes, fallback)


def erase_boxes(generator: torch.Generator, images: torch.Tensor, scale: list[float], ratio: list[float]
                ) -> torch.Tensor:
    """RandomErasing's boxes: height ``round(sqrt(area * aspect))``, strictly smaller than the image, else an
    empty box (the sample is left as it is)."""
    n, _, height, width = images.shape
    heights, widths = draw_box_sizes(generator, n, height, width, scale, ratio, images.device)
    heights, widths, found = first_fit(heights, widths, (heights < height) & (widths < width))
    boxes = place(generator, heights, widths, height, width)
    return boxes * found[:, None]


def _bilinear_source(start: torch.Tensor, length: torch.Tensor, size: int
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For ``size`` output pixels over ``[start, start + length)``: the two source indices and the weight of
    the second, each (N, size) (``interpolate``'s bilinear, align_corners=False, clamped to the box)."""
    scale = (length.float() / size)[:, None]
    source = (scale * (torch.arange(size, device=start.device) + 0.5) - 0.5).clamp(min=0.0)
    low = source.floor().long().clamp(max=length[:, None] - 1)
    high = (low + 1).clamp(max=length[:, None] - 1)
    return start[:, None] + low, start[:, None] + high, source - low


def resized_crop(images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Each sample's box resized to the input's H x W, bilinearly (torchvision's ``resized_crop`` when it
    enlarges, which is always here: a box is never larger than the image)."""
    n, channels, height, width = images.shape
    left0, left1, wx = _bilinear_source(boxes[:, 1], boxes[:, 3], width)
    top0, top1, wy = _bilinear_source(boxes[:, 0], boxes[:, 2], height)

    def columns(index: torch.Tensor) -> torch.Tensor:
        return images.gather(3, index[:, None, None, :].expand(n, channels, images.shape[2], width))

    wx = wx[:, None, None, :].to(images.dtype)
    mixed = columns(left0) * (1.0 - wx) + columns(left1) * wx

    def rows(index: torch.Tensor) -> torch.Tensor:
        return mixed.gather(2, index[:, None, :, None].expand(n, channels, height, width))

    wy = wy[:, None, :, None].to(images.dtype)
    return rows(top0) * (1.0 - wy) + rows(top1) * wy


def box_mask(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(N, 1, H, W) bool: inside each sample's box."""
    rows = torch.arange(height, device=boxes.device)[None, :]
    cols = torch.arange(width, device=boxes.device)[None, :]
    inside_rows = (rows >= boxes[:, :1]) & (rows < boxes[:, :1] + boxes[:, 2:3])
    inside_cols = (cols >= boxes[:, 1:2]) & (cols < boxes[:, 1:2] + boxes[:, 3:4])
    return (inside_rows[:, :, None] & inside_cols[:, None, :])[:, None]


def erase(images: torch.Tensor, boxes: torch.Tensor, fill: torch.Tensor | float) -> torch.Tensor:
    """Set every sample's box to ``fill`` (a number, or a tensor of the images' shape for noise)."""
    return torch.where(box_mask(boxes, *images.shape[-2:]), torch.as_tensor(fill, dtype=images.dtype,
                                                                         device=images.device), images)
