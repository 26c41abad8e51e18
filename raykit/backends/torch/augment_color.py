"""PyTorch colour kernels of the augmentation catalogue: torchvision's (v2) float-image colour functions with
one factor per sample. They take NCHW float batches with pixels in [0, 1] and clamp to it, as torchvision
does; ``color_jitter``, ``randaugment`` and ``trivialaugment`` (:mod:`raykit.backends.torch.augment`) call them.

Every ``factor``/``shift``/``bits``/``threshold`` is a (N,) tensor: sample n gets ``factor[n]``::

    adjust_saturation(images, torch.tensor([0.0, 1.0]))   # sample 0 grayscale, sample 1 unchanged
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from raykit.augment import HSV_SECTORS, LUMA


def _per_sample(values: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    return values.to(images.device, images.dtype)[:, None, None, None]


def grayscale(images: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) luma of RGB images."""
    r, g, b = images.unbind(dim=1)
    return (r * LUMA[0] + g * LUMA[1] + b * LUMA[2])[:, None]


def blend(images: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """``factor * images + (1 - factor) * other``, clamped to [0, 1] (torchvision's ``_blend``)."""
    factor = _per_sample(factor, images)
    return (images * factor + other * (1.0 - factor)).clamp(0.0, 1.0)


def adjust_brightness(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Multiply by ``factor``, clamped: 0 is black, 1 unchanged."""
    return (images * _per_sample(factor, images)).clamp(0.0, 1.0)


def adjust_contrast(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with the image's mean luma (the mean pixel when it is not RGB): 0 is flat grey, 1 unchanged."""
    luma = grayscale(images) if images.shape[1] == 3 else images
    return blend(images, luma.mean(dim=(1, 2, 3), keepdim=True), factor)


def adjust_saturation(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with the grayscale image: 0 is gray, 1 unchanged; images that are not RGB are returned as they
    are (torchvision's rule for one channel)."""
    return blend(images, grayscale(images), factor) if images.shape[1] == 3 else images


def adjust_sharpness(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend the inner pixels with a 3x3 smoothing (1s around a 5, / 13): 0 blurs, 1 unchanged, 2 sharpens;
    the border pixels stay; images of 2 px or less in a side are returned as they are."""
    channels, height, width = images.shape[1:]
    if height <= 2 or width <= 2:
        return images
    kernel = torch.full((3, 3), 1.0 / 13.0, dtype=images.dtype, device=images.device)
    kernel[1, 1] = 5.0 / 13.0
    blurred = F.conv2d(images, kernel.expand(channels, 1, 3, 3), groups=channels)
    inner = images[..., 1:-1, 1:-1]
    sharpened = images.clone()
    sharpened[..., 1:-1, 1:-1] = inner + (blurred - inner) * (1.0 - _per_sample(factor, images))
    return sharpened.clamp(0.0, 1.0)


def rgb_to_hsv(images: torch.Tensor) -> torch.Tensor:
    """RGB -> HSV, all channels in [0, 1] (torchvision's ``_rgb_to_hsv``)."""
    r, g, _ = images.unbind(dim=1)
    minc, maxc = torch.aminmax(images, dim=1)
    eqc = maxc == minc
    ones = torch.ones_like(maxc)
    span = maxc - minc
    s = span / torch.where(eqc, ones, maxc)
    rc, gc, bc = ((maxc[:, None] - images) / torch.where(eqc, ones, span)[:, None]).unbind(dim=1)
    max_is_r, max_is_g = maxc == r, maxc == g
    h = ((bc - gc) * max_is_r + (rc + 2.0 - bc) * (max_is_g & ~max_is_r)
         + (gc + 4.0 - rc) * (~max_is_g & ~max_is_r))
    return torch.stack(((h / 6.0 + 1.0).fmod(1.0), s, maxc), dim=1)


def hsv_to_rgb(images: torch.Tensor) -> torch.Tensor:
    """HSV -> RGB (torchvision's ``_hsv_to_rgb``)."""
    h, s, v = images.unbind(dim=1)
    sector = torch.floor(h * 6.0)
    f = h * 6.0 - sector
    p = ((1.0 - s) * v).clamp(0.0, 1.0)
    q = ((1.0 - s * f) * v).clamp(0.0, 1.0)
    t = ((s * f + (1.0 - s)) * v).clamp(0.0, 1.0)
    candidates = torch.stack((v, p, q, t), dim=1)  # (N, 4, H, W)
    table = torch.tensor(HSV_SECTORS, device=images.device)  # (3, 6)
    select = table[:, sector.long().remainder(6)].movedim(0, 1)  # (N, 3, H, W)
    return candidates.gather(1, select)


def adjust_hue(images: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the hue by ``shift`` turns (in [-0.5, 0.5]) through HSV."""
    hsv = rgb_to_hsv(images)
    hue = (hsv[:, 0] + shift.to(images.device, images.dtype)[:, None, None]).remainder(1.0)
    return hsv_to_rgb(torch.stack((hue, hsv[:, 1], hsv[:, 2]), dim=1))


def posterize(images: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """Keep ``bits`` bits per pixel: floor(x * 2**bits) / 2**bits."""
    levels = _per_sample(2.0 ** bits.float(), images)
    return torch.minimum((images * levels).floor().clamp(min=0.0), levels - 1.0) / levels


def solarize(images: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """Invert (1 - x) the pixels >= ``threshold``."""
    return torch.where(images >= _per_sample(threshold, images), 1.0 - images, images)


def autocontrast(images: torch.Tensor) -> torch.Tensor:
    """Stretch every channel of every image to [0, 1] (a flat channel stays as it is)."""
    low = images.amin(dim=(-2, -1), keepdim=True)
    high = images.amax(dim=(-2, -1), keepdim=True)
    flat = high == low
    scale = torch.where(flat, torch.ones_like(high), high - low)
    return ((images - torch.where(flat, torch.zeros_like(low), low)) / scale).clamp(0.0, 1.0)


def equalize(images: torch.Tensor) -> torch.Tensor:
    """Histogram-equalize every channel of every image on 256 levels (torchvision's PIL-like lookup table;
    the pixels are quantized to uint8 first, as torchvision does for float images)."""
    n, c, height, width = images.shape
    levels = (images.clamp(0.0, 1.0) * (256.0 - 1e-3)).long().flatten(2)  # torchvision's float -> uint8
    hist = torch.zeros(n, c, 256, dtype=torch.long, device=images.device)
    hist.scatter_add_(2, levels, torch.ones_like(levels))
    cum = hist.cumsum(2)
    top = hist.gather(2, cum.argmax(2, keepdim=True))  # count of the image's highest level
    step = torch.div(height * width - top, 255, rounding_mode="floor")
    lut = torch.div(cum[..., :-1] + step // 2, step.clamp(min=1), rounding_mode="floor").clamp(0, 255)
    lut = torch.cat([torch.zeros_like(lut[..., :1]), lut], dim=2)
    equalized = torch.where(step > 0, lut.gather(2, levels), levels)
    return (equalized.to(images.dtype) / 255.0).view(n, c, height, width)
