"""TensorFlow colour kernels of the augmentation catalogue, the same functions as
:mod:`raykit.backends.torch.augment_color` (torchvision's v2 float-image colour functions, one factor per
sample) on NHWC batches with pixels in [0, 1], clamped to it. Traceable in a ``tf.function``.
"""

from __future__ import annotations

import tensorflow as tf

from raykit.augment import HSV_SECTORS, LUMA


def _per_sample(values) -> tf.Tensor:
    return tf.cast(values, tf.float32)[:, None, None, None]


def _channels(images: tf.Tensor) -> int:
    return images.shape[-1]


def grayscale(images: tf.Tensor) -> tf.Tensor:
    """(N, H, W, 1) luma of RGB images."""
    return (images[..., :1] * LUMA[0] + images[..., 1:2] * LUMA[1] + images[..., 2:3] * LUMA[2])


def blend(images: tf.Tensor, other: tf.Tensor, factor) -> tf.Tensor:
    factor = _per_sample(factor)
    return tf.clip_by_value(images * factor + other * (1.0 - factor), 0.0, 1.0)


def adjust_brightness(images: tf.Tensor, factor) -> tf.Tensor:
    return tf.clip_by_value(images * _per_sample(factor), 0.0, 1.0)


def adjust_contrast(images: tf.Tensor, factor) -> tf.Tensor:
    luma = grayscale(images) if _channels(images) == 3 else images
    return blend(images, tf.reduce_mean(luma, axis=[1, 2, 3], keepdims=True), factor)


def adjust_saturation(images: tf.Tensor, factor) -> tf.Tensor:
    return blend(images, grayscale(images), factor) if _channels(images) == 3 else images


def adjust_sharpness(images: tf.Tensor, factor) -> tf.Tensor:
    height, width = images.shape[1], images.shape[2]
    if height is not None and width is not None and (height <= 2 or width <= 2):
        return images
    kernel = tf.constant([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0
    kernel = tf.tile(kernel[:, :, None, None], [1, 1, _channels(images), 1])
    blurred = tf.nn.depthwise_conv2d(images, kernel, [1, 1, 1, 1], "VALID")
    inner = images[:, 1:-1, 1:-1, :]
    inner = inner + (blurred - inner) * (1.0 - _per_sample(factor))
    inside = tf.pad(tf.ones_like(inner, tf.bool), [[0, 0], [1, 1], [1, 1], [0, 0]])
    return tf.clip_by_value(tf.where(inside, tf.pad(inner, [[0, 0], [1, 1], [1, 1], [0, 0]]), images), 0.0, 1.0)


def rgb_to_hsv(images: tf.Tensor) -> tf.Tensor:
    """RGB -> HSV as torchvision computes it (``tf.image.rgb_to_hsv`` rounds differently)."""
    r, g = images[..., 0], images[..., 1]
    minc, maxc = tf.reduce_min(images, -1), tf.reduce_max(images, -1)
    eqc = maxc == minc
    ones = tf.ones_like(maxc)
    span = maxc - minc
    s = span / tf.where(eqc, ones, maxc)
    scaled = (maxc[..., None] - images) / tf.where(eqc, ones, span)[..., None]
    rc, gc, bc = scaled[..., 0], scaled[..., 1], scaled[..., 2]
    max_is_r, max_is_g = maxc == r, maxc == g

    def where(mask, value):
        return value * tf.cast(mask, value.dtype)

    h = (where(max_is_r, bc - gc) + where(max_is_g & ~max_is_r, rc + 2.0 - bc)
         + where(~max_is_g & ~max_is_r, gc + 4.0 - rc))
    return tf.stack([tf.math.floormod(h / 6.0 + 1.0, 1.0), s, maxc], -1)


def hsv_to_rgb(images: tf.Tensor) -> tf.Tensor:
    h, s, v = images[..., 0], images[..., 1], images[..., 2]
    sector = tf.floor(h * 6.0)
    f = h * 6.0 - sector
    p = tf.clip_by_value((1.0 - s) * v, 0.0, 1.0)
    q = tf.clip_by_value((1.0 - s * f) * v, 0.0, 1.0)
    t = tf.clip_by_value((s * f + (1.0 - s)) * v, 0.0, 1.0)
    candidates = tf.stack([v, p, q, t], -1)  # (N, H, W, 4)
    select = tf.gather(tf.constant(HSV_SECTORS, tf.int32), tf.math.floormod(tf.cast(sector, tf.int32), 6),
                       axis=1)  # (3, N, H, W)
    return tf.gather(candidates, tf.transpose(select, [1, 2, 3, 0]), axis=-1, batch_dims=3)


def adjust_hue(images: tf.Tensor, shift) -> tf.Tensor:
    hsv = rgb_to_hsv(images)
    hue = tf.math.floormod(hsv[..., 0] + tf.cast(shift, tf.float32)[:, None, None], 1.0)
    return hsv_to_rgb(tf.stack([hue, hsv[..., 1], hsv[..., 2]], -1))


def posterize(images: tf.Tensor, bits) -> tf.Tensor:
    levels = _per_sample(tf.pow(2.0, tf.cast(bits, tf.float32)))
    return tf.minimum(tf.maximum(tf.floor(images * levels), 0.0), levels - 1.0) / levels


def solarize(images: tf.Tensor, threshold) -> tf.Tensor:
    return tf.where(images >= _per_sample(threshold), 1.0 - images, images)


def autocontrast(images: tf.Tensor) -> tf.Tensor:
    low = tf.reduce_min(images, axis=[1, 2], keepdims=True)
    high = tf.reduce_max(images, axis=[1, 2], keepdims=True)
    flat = high == low
    scale = tf.where(flat, tf.ones_like(high), high - low)
    return tf.clip_by_value((images - tf.where(flat, tf.zeros_like(low), low)) / scale, 0.0, 1.0)


def equalize(images: tf.Tensor) -> tf.Tensor:
    """Histogram equalization of every channel on 256 levels, as torchvision (and the torch backend) do."""
    shape = tf.shape(images)
    per_channel = tf.transpose(images, [0, 3, 1, 2])  # (N, C, H, W)
    levels = tf.cast(tf.clip_by_value(per_channel, 0.0, 1.0) * (256.0 - 1e-3), tf.int32)
    levels = tf.reshape(levels, [shape[0], shape[3], -1])
    rows = tf.reshape(tf.range(shape[0] * shape[3]), [shape[0], shape[3], 1])  # one histogram per (n, c)
    hist = tf.math.unsorted_segment_sum(tf.ones_like(levels), rows * 256 + levels, shape[0] * shape[3] * 256)
    hist = tf.reshape(hist, [shape[0], shape[3], 256])
    cum = tf.cumsum(hist, axis=-1)
    top = tf.gather(hist, tf.argmax(cum, axis=-1, output_type=tf.int32), batch_dims=2)[..., None]
    step = (tf.shape(levels)[-1] - top) // 255
    lut = tf.clip_by_value((cum[..., :-1] + step // 2) // tf.maximum(step, 1), 0, 255)
    lut = tf.concat([tf.zeros_like(lut[..., :1]), lut], axis=-1)
    equalized = tf.where(step > 0, tf.gather(lut, levels, batch_dims=2), levels)
    equalized = tf.reshape(tf.cast(equalized, tf.float32) / 255.0, tf.shape(per_channel))
    return tf.transpose(equalized, [0, 2, 3, 1])
