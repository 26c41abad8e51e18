"""Decoding encoded images (PNG, JPEG, ...) into uint8 HWC arrays, with a clear error per bad file."""

from __future__ import annotations

import io
import re

import numpy as np

from raykit.data.errors import DataError

COLOR_MODES = {"grayscale": "L", "rgb": "RGB"}


def decode(data: bytes, name: str, color_mode: str, resize: tuple[int, int] | None) -> np.ndarray:
    """One image as ``uint8`` (height, width, channels).

    ``color_mode`` is ``grayscale`` (1 channel) or ``rgb`` (3); ``resize`` is ``(height, width)`` or None to
    keep the file's size. ``name`` (a file path or ``file#row``) is what an error reports.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            image = image.convert(COLOR_MODES[color_mode])
            if resize is not None and image.size != (resize[1], resize[0]):
                image = image.resize((resize[1], resize[0]), Image.Resampling.BILINEAR)
            array = np.asarray(image, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"cannot read image {name}: {_reason(exc)}; accepted: PNG, JPEG, BMP, GIF, TIFF or WebP "
                        "files that open with Pillow") from None
    return array[..., None] if array.ndim == 2 else array


LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, as Pillow converts RGB to L


def as_read(x: np.ndarray, color_mode: str, resize: tuple[int, int] | None, name: str) -> np.ndarray:
    """Images held as arrays (``(N, H, W, C)`` float32 in [0, 1]: the digits, an .npz) with ``data.color_mode``
    and ``data.resize`` applied as :func:`decode` applies them to files: RGB to grayscale by Pillow's luma,
    grayscale repeated to RGB, then each channel resized bilinearly. ``name`` is what an error reports."""
    channels = x.shape[-1]
    if color_mode != "auto" and channels not in (1, 3):
        raise DataError(f"data.color_mode: got {color_mode!r} for {name}, whose images have {channels} channels; "
                        "accepted: auto (images as stored), or grayscale / rgb for images of 1 or 3 channels")
    if color_mode == "grayscale" and channels == 3:
        x = (x @ np.asarray(LUMA, np.float32))[..., None]
    elif color_mode == "rgb" and channels == 1:
        x = np.repeat(x, 3, axis=-1)
    if resize is None or tuple(x.shape[1:3]) == tuple(resize):
        return x
    from PIL import Image

    height, width = resize
    out = np.empty((len(x), height, width, x.shape[-1]), np.float32)
    for index, image in enumerate(x):
        for channel in range(x.shape[-1]):
            plane = Image.fromarray(np.ascontiguousarray(image[..., channel], np.float32), mode="F")
            out[index, ..., channel] = np.asarray(plane.resize((width, height), Image.Resampling.BILINEAR))
    return np.clip(out, 0.0, 1.0, out=out)


def color_mode_of(data: bytes, name: str) -> str:
    """``grayscale`` for single-channel files (L, 1, I, F modes), else ``rgb``."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            return "grayscale" if image.mode in ("L", "1", "I", "I;16", "F", "LA") else "rgb"
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"cannot read image {name}: {_reason(exc)}; accepted: PNG, JPEG, BMP, GIF, TIFF or WebP "
                        "files that open with Pillow") from None


def _reason(exc: Exception) -> str:
    """Pillow's message without the in-memory buffer it names (``<_io.BytesIO object at 0x...>``)."""
    text = re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-f]+>", "", str(exc))
    return "not an image file Pillow can identify" if text == "cannot identify image file" else text


def encode_png(image: np.ndarray) -> bytes:
    """A uint8 (H, W, 1|3) or float [0, 1] image as PNG bytes (lossless: decoding gives the same pixels)."""
    from PIL import Image

    if image.dtype != np.uint8:
        image = np.clip(np.rint(np.asarray(image, np.float64) * 255.0), 0, 255).astype(np.uint8)
    pixels = image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def stack_same_shape(images: list[np.ndarray], names: list[str]) -> np.ndarray:
    """One (N, H, W, C) array; mixed shapes are an error naming two files that differ."""
    first = images[0].shape
    for image, name in zip(images, names):
        if image.shape != first:
            raise DataError(f"images differ in shape: {names[0]} is {_hwc(first)} but {name} is "
                            f"{_hwc(image.shape)}; accepted: one shape, or set data.resize: [height, width] to "
                            "resize every image as it is read")
    return np.stack(images)


def _hwc(shape: tuple) -> str:
    return "x".join(str(s) for s in shape)
