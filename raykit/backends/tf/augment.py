"""TensorFlow implementation of the augmentation catalogue in :mod:`raykit.augment`, with the same
parameters and conventions as the PyTorch one.

Batches are NHWC float tensors. Random parameters are drawn per sample with TensorFlow's *stateless*
random ops from a seed tensor derived from (train.seed, epoch, rank, step), so the ops can run inside a
``tf.function`` on any device and a resumed run replays exactly the same augmentation. Consecutive
geometric ops (rotate, shift, shear, zoom) are composed into one projective transform per sample and
resampled once by ``ImageProjectiveTransformV3`` — the kernel Keras 3's own RandomRotation/Translation/
Zoom/Shear layers use. raykit calls the kernel directly instead of those layers because the layers draw
from stateful seed generators (a resume could not replay them) and parameterise ranges differently
from the catalogue shared with torch.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from raykit.augment import AUGMENT_POLICY_OPS, MAGNITUDE_BINS, SIGNED_POLICY_OPS, policy_magnitudes
from raykit.augment_dispatch import BaseAugmenter, Kernels, jitter_adjustments, policy_pixel_ops
from raykit.backends.tf import augment_color as color
from raykit.backends.tf.augment_boxes import crop_boxes, erase, erase_boxes, resized_crop
from raykit.plots import augment_grid_png


def step_seed(seed: int, epoch: int, rank: int, step) -> tf.Tensor:
    """The stateless seed (2 int32) of one batch; ``step`` may be a tensor."""
    base = np.random.SeedSequence([seed, epoch, rank]).generate_state(2, dtype=np.uint32).astype(np.int64)
    base = tf.constant(base % (2**31 - 1), dtype=tf.int32)
    return tf.random.experimental.stateless_fold_in(base, tf.cast(step, tf.int32))


class Augmenter(BaseAugmenter):
    """Applies resolved ops to NHWC batches with the TensorFlow kernels (:data:`KERNELS`); the op
    dispatch is :class:`raykit.augment_dispatch.BaseAugmenter`'s."""

    def __init__(self, ops: list[dict], num_classes: int):
        super().__init__(ops, num_classes, KERNELS)

    def train_batch(self, images: tf.Tensor, labels: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Augment a training batch (traceable in a ``tf.function``); return images and one-hot (or
        mixed) float targets of shape (N, num_classes). The op at index i draws from
        ``stateless_fold_in(seed, i)``."""
        return self.augment(images, tf.one_hot(labels, self.num_classes, dtype=tf.float32), seed)


def build_augmenter(ops: list[dict], num_classes: int) -> Augmenter:
    """An :class:`Augmenter` for ``ops`` (the output of :func:`raykit.augment.resolve_ops`)."""
    return Augmenter(ops, num_classes)


def _uniform(seed, n, low, high, index=0):
    return tf.random.stateless_uniform([n], tf.random.experimental.stateless_fold_in(seed, index), low, high)


# --------------------------------------------------------------------------------------------------
# Ops with explicit parameters


def crop(images: tf.Tensor, padding: int, offsets: tf.Tensor) -> tf.Tensor:
    """Zero-pad by ``padding`` and crop each sample back at ``offsets[n] = (dy, dx)`` (a gather)."""
    height, width = tf.shape(images)[1], tf.shape(images)[2]
    padded = tf.pad(images, [[0, 0], [padding, padding], [padding, padding], [0, 0]])
    rows = offsets[:, :1] + tf.range(height)[None, :]
    cols = offsets[:, 1:] + tf.range(width)[None, :]
    padded = tf.gather(padded, rows, axis=1, batch_dims=1)
    return tf.gather(padded, cols, axis=2, batch_dims=1)


def flip(images: tf.Tensor, mask: tf.Tensor, axis: int) -> tf.Tensor:
    """Reverse ``axis`` (2 = horizontal, 1 = vertical) of the samples where ``mask`` is true."""
    return tf.where(mask[:, None, None, None], tf.reverse(images, [axis]), images)


def _matrices(a, b, c, d, tx=None, ty=None) -> tf.Tensor:
    zero, one = tf.zeros_like(a), tf.ones_like(a)
    tx = zero if tx is None else tx
    ty = zero if ty is None else ty
    rows = [tf.stack([a, b, tx], -1), tf.stack([c, d, ty], -1), tf.stack([zero, zero, one], -1)]
    return tf.stack(rows, -2)


def rotation_matrix(degrees) -> tf.Tensor:
    """(N, 3, 3) output->input maps rotating content counterclockwise (y down, about the centre)."""
    theta = tf.convert_to_tensor(degrees, tf.float32) * (math.pi / 180)
    return _matrices(tf.cos(theta), -tf.sin(theta), tf.sin(theta), tf.cos(theta))


def shift_fraction_matrix(width_fraction, height_fraction) -> tf.Tensor:
    """Maps moving content right/down by fractions of the image size (resolved in ``warp``)."""
    dx = tf.convert_to_tensor(width_fraction, tf.float32)
    dy = tf.convert_to_tensor(height_fraction, tf.float32)
    one, zero = tf.ones_like(dx), tf.zeros_like(dx)
    # Translation in units of the image size; warp scales column 2 by (W, H).
    return _matrices(one, zero, zero, one, -dx, -dy)


def shear_matrix(degrees) -> tf.Tensor:
    """Maps of the horizontal shear x' = x + tan(degrees) * y (y down, from the centre)."""
    tan = tf.tan(tf.convert_to_tensor(degrees, tf.float32) * (math.pi / 180))
    one, zero = tf.ones_like(tan), tf.zeros_like(tan)
    return _matrices(one, -tan, zero, one)


def vertical_shear_matrix(degrees) -> tf.Tensor:
    """Maps of the vertical shear y' = y + tan(degrees) * x (x right, from the centre)."""
    tan = tf.tan(tf.convert_to_tensor(degrees, tf.float32) * (math.pi / 180))
    one, zero = tf.ones_like(tan), tf.zeros_like(tan)
    return _matrices(one, zero, -tan, one)


def zoom_matrix(scale) -> tf.Tensor:
    """Maps scaling content about the centre by ``scale`` (> 1 zooms in)."""
    inverse = 1.0 / tf.convert_to_tensor(scale, tf.float32)
    zero = tf.zeros_like(inverse)
    return _matrices(inverse, zero, zero, inverse)


def warp(images: tf.Tensor, matrices: tf.Tensor) -> tf.Tensor:
    """Resample with per-sample (N, 3, 3) output->input maps about the image centre; bilinear, zeros
    outside. Translations in the maps are fractions of (width, height)."""
    shape = tf.shape(images)
    height, width = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
    size = tf.stack([width, height])
    matrices = tf.concat([matrices[:, :2, :2], (matrices[:, :2, 2] * size)[:, :, None]], axis=2)
    centre = tf.stack([(width - 1) / 2, (height - 1) / 2])
    # Absolute pixel coordinates: input = c + L (output - c) + t  =>  offset = c - L c + t
    linear = matrices[:, :, :2]
    offset = centre[None, :] - tf.linalg.matvec(linear, tf.broadcast_to(centre, tf.shape(linear)[:2])) + matrices[:, :, 2]
    transforms = tf.concat([linear[:, 0, :], offset[:, :1], linear[:, 1, :], offset[:, 1:],
                            tf.zeros([shape[0], 2])], axis=1)
    return tf.raw_ops.ImageProjectiveTransformV3(images=images, transforms=transforms, output_shape=shape[1:3],
                                                 fill_value=0.0, interpolation="BILINEAR", fill_mode="CONSTANT")


def adjust_brightness(images: tf.Tensor, delta: tf.Tensor) -> tf.Tensor:
    return images + delta[:, None, None, None]


def adjust_contrast(images: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
    """(x - mean) * factor + mean, with one mean per image over all pixels and channels."""
    mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
    return (images - mean) * factor[:, None, None, None] + mean


def normalize(images: tf.Tensor, mean: list[float], std: list[float]) -> tf.Tensor:
    channels = images.shape[-1]
    for name, values in (("mean", mean), ("std", std)):
        if channels is not None and len(values) not in (1, channels):
            raise ValueError(f"augment normalize.{name}: got {values} for {channels} channels; accepted: one "
                             f"value or {channels}")
    return (images - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


def _beta(seed, alpha: float) -> tf.Tensor:
    first = tf.random.stateless_gamma([], tf.random.experimental.stateless_fold_in(seed, 10), alpha)
    second = tf.random.stateless_gamma([], tf.random.experimental.stateless_fold_in(seed, 11), alpha)
    return first / (first + second)


def mixup(images: tf.Tensor, perm: tf.Tensor, lam) -> tf.Tensor:
    """Mix every sample with its partner ``perm[n]``: ``lam * a + (1 - lam) * b``."""
    return lam * images + (1.0 - lam) * tf.gather(images, perm)


def cutmix_box(height, width, lam, seed) -> tf.Tensor:
    """(top, bottom, left, right) of a box of about (1 - lam) of the area, centred uniformly, clipped:
    rows top:bottom, columns left:right (the order torch's ``cutmix_box`` returns)."""
    h, w = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    cut = tf.sqrt(1.0 - lam)
    centre = tf.random.stateless_uniform([2], seed) * tf.stack([h, w])
    half = tf.stack([h * cut, w * cut]) / 2
    low = tf.cast(tf.round(tf.clip_by_value(centre - half, 0.0, tf.stack([h, w]))), tf.int32)
    high = tf.cast(tf.round(tf.clip_by_value(centre + half, 0.0, tf.stack([h, w]))), tf.int32)
    return tf.stack([low[0], high[0], low[1], high[1]])


def cutmix(images: tf.Tensor, perm: tf.Tensor, box: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Paste the partner's pixels inside ``box`` (top, bottom, left, right); return images and lam = the
    area that stayed."""
    height, width = tf.shape(images)[1], tf.shape(images)[2]
    rows = tf.range(height)[:, None]
    cols = tf.range(width)[None, :]
    inside = (rows >= box[0]) & (rows < box[1]) & (cols >= box[2]) & (cols < box[3])
    mixed = tf.where(inside[None, :, :, None], tf.gather(images, perm), images)
    lam = 1.0 - tf.reduce_mean(tf.cast(inside, tf.float32))
    return mixed, lam


# --------------------------------------------------------------------------------------------------
# Kernels: (op, images, seed) -> maps or images, ``seed`` being the op's own (folded by its index)


def _rotate(op: dict, images: tf.Tensor, seed) -> tf.Tensor:
    return rotation_matrix(_uniform(seed, tf.shape(images)[0], -op["degrees"], op["degrees"]))


def _shift(op: dict, images: tf.Tensor, seed) -> tf.Tensor:
    # fractions of the size, resolved in pixels by warp's centre-based coordinates
    n = tf.shape(images)[0]
    return shift_fraction_matrix(_uniform(seed, n, -op["width"], op["width"], 0),
                                 _uniform(seed, n, -op["height"], op["height"], 1))


def _shear(op: dict, images: tf.Tensor, seed) -> tf.Tensor:
    return shear_matrix(_uniform(seed, tf.shape(images)[0], -op["degrees"], op["degrees"]))


def _zoom(op: dict, images: tf.Tensor, seed) -> tf.Tensor:
    low, high = op["range"]
    return zoom_matrix(_uniform(seed, tf.shape(images)[0], low, high))


def _random_crop(op: dict, images: tf.Tensor, seed) -> tf.Tensor:
    offsets = tf.random.stateless_uniform([tf.shape(images)[0], 2], seed, 0, 2 * op["padding"] + 1, dtype=tf.int32)
    return crop(images, op["padding"], offsets)


def _flips(axis: int):
    """The kernel flipping ``axis`` with probability ``p`` per sample."""
    def kernel(op: dict, images: tf.Tensor, seed) -> tf.Tensor:
        return flip(images, _uniform(seed, tf.shape(images)[0], 0.0, 1.0) < op["p"], axis=axis)
    return kernel


def _brightness(op: dict, images: tf.Tensor, seed) -> tf.Tensor:
    return adjust_brightness(images, _uniform(seed, tf.shape(images)[0], -op["delta"], op["delta"]))


def _contrast(op: dict, images: tf.Tensor, seed) -> tf.Tensor:
    low, high = op["range"]
    return adjust_contrast(images, _uniform(seed, tf.shape(images)[0], low, high))


def _normalize(op: dict, images: tf.Tensor, seed) -> tf.Tensor:
    return normalize(images, op["mean"], op["std"])


def _mix(op: dict, images: tf.Tensor, targets: tf.Tensor, seed, num_classes: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Mixup or cutmix of the whole batch with a permutation of itself, with probability ``p``; both
    branches are computed and ``tf.where`` picks, so the graph has no data-dependent control flow."""
    n = tf.shape(images)[0]
    fire = tf.random.stateless_uniform([], tf.random.experimental.stateless_fold_in(seed, 12)) < op["p"]
    lam = _beta(seed, op["alpha"])
    perm = tf.argsort(tf.random.stateless_uniform([n], tf.random.experimental.stateless_fold_in(seed, 13)))
    if op["op"] == "mixup":
        mixed = mixup(images, perm, lam)
    else:
        box_seed = tf.random.experimental.stateless_fold_in(seed, 14)
        box = cutmix_box(tf.shape(images)[1], tf.shape(images)[2], lam, box_seed)
        mixed, lam = cutmix(images, perm, box)
    soft = lam * targets + (1.0 - lam) * tf.gather(targets, perm)
    return tf.where(fire, mixed, images), tf.where(fire, soft, targets)


def _fold(seed, index: int):
    return tf.random.experimental.stateless_fold_in(seed, index)


def _random_resized_crop(op: dict, images: tf.Tensor, seed) -> tf.Tensor:
    return resized_crop(images, crop_boxes(seed, images, op["scale"], op["ratio"]))


def _random_erasing(op: dict, images: tf.Tensor, seed) -> tf.Tensor:
    boxes = erase_boxes(seed, images, op["scale"], op["ratio"])
    fires = _uniform(seed, tf.shape(images)[0], 0.0, 1.0, 3) < op["p"]
    if op["value"] == "random":  # torchvision's value="random": standard normal noise per pixel and channel
        fill = tf.random.stateless_normal(tf.shape(images), _fold(seed, 4))
    else:
        fill = op["value"]
    return erase(images, boxes * tf.cast(fires, tf.int32)[:, None], fill)


# color_jitter's adjustments in their canonical order, each with its factor range for a strength.
JITTER = jitter_adjustments(color)


def _color_jitter(op: dict, images: tf.Tensor, seed) -> tf.Tensor:
    """As torch's: the non-zero adjustments in a random order per sample."""
    check_hue_channels(op, images.shape[-1])
    n = tf.shape(images)[0]
    active = [(adjust, _uniform(seed, n, *bounds(op[name]), index))
              for index, (name, (adjust, bounds)) in enumerate(JITTER.items()) if op[name] > 0]
    order = tf.argsort(tf.random.stateless_uniform([n, len(active)], _fold(seed, 4)), axis=1)
    for position in range(len(active)):
        current = images
        for index, (adjust, factor) in enumerate(active):
            chosen = (order[:, position] == index)[:, None, None, None]
            images = tf.where(chosen, adjust(current, factor), images)
    return images


def check_hue_channels(op: dict, channels: int | None) -> None:
    """A hue jitter on images that are not RGB: refused, naming the op, the parameter and the value."""
    if op["hue"] > 0 and channels is not None and channels != 3:
        raise ValueError(f"augment.ops color_jitter.hue: got {op['hue']} for images with {channels} channel(s); "
                         "accepted: hue 0 unless the images are RGB (3 channels)")


def apply_policy_ops(images: tf.Tensor, op_index: tf.Tensor, magnitude: tf.Tensor) -> tf.Tensor:
    """As torch's: sample n gets op ``AUGMENT_POLICY_OPS[op_index[n]]`` at ``magnitude[n]``."""
    height, width = images.shape[1], images.shape[2]
    zero = tf.zeros_like(magnitude)
    shear = tf.atan(magnitude) * (180 / math.pi)
    shift = tf.cast(tf.cast(magnitude, tf.int32), tf.float32)  # int(): towards zero, as torchvision
    maps = tf.stack([shift_fraction_matrix(zero, zero), shear_matrix(shear), vertical_shear_matrix(shear),
                     shift_fraction_matrix(shift / width, zero), shift_fraction_matrix(zero, shift / height),
                     rotation_matrix(magnitude)], axis=1)  # the first 6 ops of AUGMENT_POLICY_OPS
    geometric = (op_index > 0) & (op_index < maps.shape[1])  # 0 is the identity: left exactly as it is
    chosen_maps = tf.gather(maps, tf.minimum(op_index, maps.shape[1] - 1), batch_dims=1)
    images = tf.where(geometric[:, None, None, None], warp(images, chosen_maps), images)
    pixel_ops = policy_pixel_ops(color, magnitude)
    current = images
    for name, adjust in pixel_ops.items():
        chosen = (op_index == AUGMENT_POLICY_OPS.index(name))[:, None, None, None]
        images = tf.where(chosen, adjust(current), images)
    return images


def _policy_draw(seed, images: tf.Tensor, policy: str, bins) -> tuple[tf.Tensor, tf.Tensor]:
    """As torch's: a uniform op per sample at ``bins`` (None: a uniform bin), signed ops negated half the time."""
    n = tf.shape(images)[0]
    table = tf.constant(policy_magnitudes(policy, images.shape[1], images.shape[2]), tf.float32)
    op_index = tf.random.stateless_uniform([n], _fold(seed, 0), 0, len(AUGMENT_POLICY_OPS), tf.int32)
    if bins is None:
        bins = tf.random.stateless_uniform([n], _fold(seed, 1), 0, MAGNITUDE_BINS, tf.int32)
    negate = tf.random.stateless_uniform([n], _fold(seed, 2)) <= 0.5
    signed = tf.gather(tf.constant([name in SIGNED_POLICY_OPS for name in AUGMENT_POLICY_OPS]), op_index)
    magnitude = tf.gather_nd(table, tf.stack([op_index, bins], axis=1))
    return op_index, tf.where(negate & signed, -magnitude, magnitude)


def _randaugment(op: dict, images: tf.Tensor, seed) -> tf.Tensor:
    bins = tf.fill([tf.shape(images)[0]], op["magnitude"])
    for round_index in range(op["num_ops"]):
        images = apply_policy_ops(images, *_policy_draw(_fold(seed, round_index), images, "randaugment", bins))
    return images


def _trivialaugment(op: dict, images: tf.Tensor, seed) -> tf.Tensor:
    return apply_policy_ops(images, *_policy_draw(seed, images, "trivialaugment", None))


def seed_generators(layer) -> list:
    """The ``keras.random.SeedGenerator`` objects of ``layer`` and of the layers inside it."""
    found: list = []

    def walk(value) -> None:
        if isinstance(value, keras.random.SeedGenerator):
            if not any(value is seen for seen in found):
                found.append(value)
        elif isinstance(value, keras.layers.Layer):
            for attribute in vars(value).values():
                walk(attribute)
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(item)

    walk(layer)
    return found


def run_transform(layer, name: str):
    """The kernel of a user factory's Keras ``layer``: called with ``training=True`` after each of its seed
    generators is set from the op's stateless seed, so its draws are a function of (seed, epoch, rank, step)
    and replay on resume."""
    if not isinstance(layer, keras.layers.Layer):
        raise TypeError(f"augment.ops {name}: the factory returned {type(layer).__name__}; accepted: a Keras "
                        "layer (e.g. keras.layers.RandomRotation or a keras.Sequential of them)")
    generators = seed_generators(layer)

    def kernel(_: dict, images: tf.Tensor, seed) -> tf.Tensor:
        for index, generator in enumerate(generators):
            generator.state.assign(tf.cast(_fold(seed, index), generator.state.dtype))
        return layer(images, training=True)
    return kernel


# The TensorFlow implementation of every op of the catalogue; the op at index i of a batch draws from
# the batch's stateless seed folded with i, so the ops trace inside a tf.function and replay on resume.
KERNELS = Kernels(
    "tf", matrix={"rotate": _rotate, "shift": _shift, "shear": _shear, "zoom": _zoom},
    pixel={"random_crop": _random_crop, "hflip": _flips(2), "vflip": _flips(1), "brightness": _brightness,
           "contrast": _contrast, "normalize": _normalize, "random_resized_crop": _random_resized_crop,
           "color_jitter": _color_jitter, "randaugment": _randaugment, "trivialaugment": _trivialaugment,
           "random_erasing": _random_erasing},
    batch={"mixup": _mix, "cutmix": _mix}, warp=warp,
    op_rng=lambda seed, index: tf.random.experimental.stateless_fold_in(seed, index), run_transform=run_transform)


def preview_png(images_nhwc: np.ndarray, ops: list[dict], seed: int, rows: int = 4) -> bytes:
    """Original and 3 augmented versions of the first ``rows`` images, as a PNG grid."""
    batch = tf.constant(np.asarray(images_nhwc, np.float32)[:rows])
    augmenter = build_augmenter(ops, num_classes=1)
    labels = tf.zeros([len(batch)], tf.int32)
    columns = [batch.numpy()] + [augmenter.train_batch(batch, labels, step_seed(seed, 0, 0, step))[0].numpy()
                                 for step in range(3)]
    return augment_grid_png(columns, any(op["op"] == "normalize" for op in augmenter.ops))
