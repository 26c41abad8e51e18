"""TensorFlow box kernels of the augmentation catalogue (``random_resized_crop``, ``random_erasing``), the same
functions as :mod:`raykit.backends.torch.augment_boxes` on NHWC batches, drawn from stateless seeds. A box is
a (N, 4) int32 tensor of rows ``(top, left, height, width)``.
"""

from __future__ import annotations

import math

import tensorflow as tf

from raykit.augment import BOX_TRIES, fallback_crop


def _uniform(seed, index: int, shape, low: float, high: float) -> tf.Tensor:
    return tf.random.stateless_uniform(shape, tf.random.experimental.stateless_fold_in(seed, index), low, high)


def draw_box_sizes(seed, n, height: int, width: int, scale: list[float], ratio: list[float]
                   ) -> tuple[tf.Tensor, tf.Tensor]:
    """(N, BOX_TRIES) sizes ``round(sqrt(area * aspect))``, ``round(sqrt(area / aspect))`` for area fractions
    uniform in ``scale`` and log-uniform aspects (int32)."""
    area = _uniform(seed, 0, [n, BOX_TRIES], *scale) * float(height * width)
    aspect = tf.exp(_uniform(seed, 1, [n, BOX_TRIES], math.log(ratio[0]), math.log(ratio[1])))
    return (tf.cast(tf.round(tf.sqrt(area * aspect)), tf.int32),
            tf.cast(tf.round(tf.sqrt(area / aspect)), tf.int32))


def first_fit(heights: tf.Tensor, widths: tf.Tensor, fits: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Each sample's first try that fits: ``(height, width, found)``, each (N,)."""
    first = tf.argmax(tf.cast(fits, tf.int32), axis=1, output_type=tf.int32)[:, None]
    return (tf.gather(heights, first, batch_dims=1)[:, 0], tf.gather(widths, first, batch_dims=1)[:, 0],
            tf.reduce_any(fits, axis=1))


def place(seed, heights: tf.Tensor, widths: tf.Tensor, height: int, width: int) -> tf.Tensor:
    u = _uniform(seed, 2, [tf.shape(heights)[0], 2], 0.0, 1.0)
    top = tf.minimum(tf.cast(tf.floor(u[:, 0] * tf.cast(height - heights + 1, tf.float32)), tf.int32),
                     height - heights)
    left = tf.minimum(tf.cast(tf.floor(u[:, 1] * tf.cast(width - widths + 1, tf.float32)), tf.int32),
                      width - widths)
    return tf.stack([top, left, heights, widths], axis=1)


def _size(images: tf.Tensor) -> tuple[int, int]:
    """The static (H, W): the box kernels need them known when the batch is traced."""
    return int(images.shape[1]), int(images.shape[2])


def crop_boxes(seed, images: tf.Tensor, scale: list[float], ratio: list[float]) -> tf.Tensor:
    height, width = _size(images)
    widths, heights = draw_box_sizes(seed, tf.shape(images)[0], height, width, scale, ratio)
    fits = (widths > 0) & (widths <= width) & (heights > 0) & (heights <= height)
    heights, widths, found = first_fit(heights, widths, fits)
    boxes = place(seed, heights, widths, height, width)
    return tf.where(found[:, None], boxes, tf.constant(fallback_crop(height, width, ratio), tf.int32)[None])


def erase_boxes(seed, images: tf.Tensor, scale: list[float], ratio: list[float]) -> tf.Tensor:
    height, width = _size(images)
    heights, widths = draw_box_sizes(seed, tf.shape(images)[0], height, width, scale, ratio)
    heights, widths, found = first_fit(heights, widths, (heights < height) & (widths < width))
    return place(seed, heights, widths, height, width) * tf.cast(found, tf.int32)[:, None]


def _bilinear_source(start: tf.Tensor, length: tf.Tensor, size: int):
    scale = (tf.cast(length, tf.float32) / size)[:, None]
    source = tf.maximum(scale * (tf.range(size, dtype=tf.float32) + 0.5) - 0.5, 0.0)
    low = tf.minimum(tf.cast(tf.floor(source), tf.int32), length[:, None] - 1)
    high = tf.minimum(low + 1, length[:, None] - 1)
    return start[:, None] + low, start[:, None] + high, source - tf.cast(low, tf.float32)


def resized_crop(images: tf.Tensor, boxes: tf.Tensor) -> tf.Tensor:
    """Each sample's box resized to the input's H x W, bilinearly (as the torch backend's)."""
    height, width = _size(images)
    left0, left1, wx = _bilinear_source(boxes[:, 1], boxes[:, 3], width)
    top0, top1, wy = _bilinear_source(boxes[:, 0], boxes[:, 2], height)
    wx = wx[:, None, :, None]
    mixed = (tf.gather(images, left0, axis=2, batch_dims=1) * (1.0 - wx)
             + tf.gather(images, left1, axis=2, batch_dims=1) * wx)
    wy = wy[:, :, None, None]
    return (tf.gather(mixed, top0, axis=1, batch_dims=1) * (1.0 - wy)
            + tf.gather(mixed, top1, axis=1, batch_dims=1) * wy)


def box_mask(boxes: tf.Tensor, height: int, width: int) -> tf.Tensor:
    """(N, H, W, 1) bool: inside each sample's box."""
    rows = tf.range(height)[None, :]
    cols = tf.range(width)[None, :]
    inside_rows = (rows >= boxes[:, :1]) & (rows < boxes[:, :1] + boxes[:, 2:3])
    inside_cols = (cols >= boxes[:, 1:2]) & (cols < boxes[:, 1:2] + boxes[:, 3:4])
    return (inside_rows[:, :, None] & inside_cols[:, None, :])[..., None]


def erase(images: tf.Tensor, boxes: tf.Tensor, fill) -> tf.Tensor:
    """Set every sample's box to ``fill`` (a number, or a tensor of the images' shape for noise)."""
    return tf.where(box_mask(boxes, *_size(images)), tf.cast(fill, images.dtype), images)
