"""User augmentation ops, imported by tests from strings like 'tests.backends.user_augment:tag'.

Each is called as ``function(images, rng, **params)`` (raykit.augment.user_op_problems)."""

from __future__ import annotations

# Every draw of random_offsets, in call order (tests clear it).
DRAWS: list = []


def tag(images, rng, label="user"):
    """For the framework-free dispatch tests: images are lists of what was applied."""
    return images + [f"{label} {rng}"]


def only_images(images):
    """A wrong signature: no rng."""
    return images


def random_offsets(images, generator, amount=0.1):
    """torch: add one offset uniform in [-amount, amount] per sample, drawn from the op's generator."""
    import torch

    offsets = (torch.rand(len(images), generator=generator, device=generator.device) * 2 - 1) * amount
    DRAWS.append(offsets.cpu().clone())
    return images + offsets.to(images.device, images.dtype)[:, None, None, None]


def stateless_offsets(images, seed, amount=0.1):
    """tf: the same from the op's stateless seed (traceable in a tf.function)."""
    import tensorflow as tf

    offsets = tf.random.stateless_uniform([tf.shape(images)[0]], seed, -amount, amount)
    return images + offsets[:, None, None, None]


def tagger(label="user"):
    """A factory (no images, no rng): its transform appends ``label``, for the dispatch tests."""
    return lambda images: images + [label]


class RecordingOffsets:
    """torch: add one offset per sample drawn from torch's global RNG (as torchvision.transforms.v2 draw)."""

    def __init__(self, amount: float):
        self.amount = amount

    def __call__(self, images):
        import torch

        offsets = (torch.rand(len(images)) * 2 - 1) * self.amount
        DRAWS.append(offsets.clone())
        return images + offsets.to(images.device, images.dtype)[:, None, None, None]


def global_offsets(amount=0.1):
    """torch: a factory of RecordingOffsets."""
    return RecordingOffsets(amount)


def keras_rotation(factor=0.2):
    """tf: a factory of a Keras pipeline with seed generators."""
    import keras

    return keras.Sequential([keras.layers.RandomRotation(factor), keras.layers.RandomContrast(0.3)])
