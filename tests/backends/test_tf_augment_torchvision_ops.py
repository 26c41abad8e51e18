"""The TensorFlow kernels of the ops that follow torchvision's transforms (random_resized_crop, color_jitter,
randaugment, trivialaugment, random_erasing): the same images as torch's kernels for the same explicit
parameters (torch's are checked against torchvision in test_torch_augment_torchvision_ops.py), and, where the
random draws differ between frameworks (stateless seeds vs a torch.Generator), the same behaviour."""

from __future__ import annotations

import numpy as np
import pytest

import raykit.backends.tf  # noqa: F401  (sets the Keras backend before TensorFlow loads)
import tensorflow as tf  # noqa: E402
import torch  # noqa: E402

from raykit.augment import AUGMENT_POLICY_OPS, resolve_ops  # noqa: E402
from raykit.backends.tf import augment as tfa  # noqa: E402
from raykit.backends.tf import augment_boxes as tf_boxes  # noqa: E402
from raykit.backends.tf import augment_color as tf_color  # noqa: E402
from raykit.backends.torch import augment as tha  # noqa: E402
from raykit.backends.torch import augment_boxes as torch_boxes  # noqa: E402
from raykit.backends.torch import augment_color as torch_color  # noqa: E402


def nchw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()


def as_nhwc(t: torch.Tensor) -> np.ndarray:
    return t.permute(0, 2, 3, 1).numpy()


def rgb(n=4, height=9, width=7, seed=0) -> np.ndarray:
    images = np.random.default_rng(seed).random((n, height, width, 3), dtype=np.float32)
    images[0, :2, :2, :] = 0.5  # gray pixels
    return images


def run_ops(ops, images, step=0):
    augmenter = tfa.build_augmenter(resolve_ops("none", ops), 10)
    return augmenter.train_batch(tf.constant(images), tf.zeros([len(images)], tf.int32),
                                 tfa.step_seed(0, 1, 0, step))[0].numpy()


# ---- the same explicit parameters give torch's images


@pytest.mark.parametrize("name, values", [
    ("adjust_brightness", [0.0, 0.5, 1.3, 2.0]), ("adjust_contrast", [0.0, 0.5, 1.3, 2.0]),
    ("adjust_saturation", [0.0, 0.5, 1.3, 2.0]), ("adjust_sharpness", [0.0, 0.5, 1.3, 2.0]),
    ("adjust_hue", [-0.5, -0.1, 0.25, 0.5]), ("posterize", [8, 6, 4, 1]), ("solarize", [1.0, 0.5, 0.2, 0.0])])
def test_colour_functions_match_torch(name, values):
    images = rgb()
    for channels in (3, 1):
        if channels == 1 and name == "adjust_hue":
            continue
        part = images[..., :channels]
        got = getattr(tf_color, name)(tf.constant(part), tf.constant(values, tf.float32)).numpy()
        np.testing.assert_allclose(got, as_nhwc(getattr(torch_color, name)(nchw(part), torch.tensor(values))),
                                   atol=1e-6)


def test_autocontrast_and_equalize_match_torch():
    images = np.concatenate([rgb(), np.full((1, 9, 7, 3), 0.3, np.float32), rgb(1, seed=5) * 0.2])
    for name in ("autocontrast", "equalize"):
        np.testing.assert_allclose(getattr(tf_color, name)(tf.constant(images)).numpy(),
                                   as_nhwc(getattr(torch_color, name)(nchw(images))), atol=1e-6)


def test_resized_crop_and_erase_of_explicit_boxes_match_torch():
    images = rgb()
    boxes = np.array([[0, 0, 9, 7], [2, 1, 4, 5], [5, 3, 3, 2], [8, 6, 1, 1]])  # top, left, height, width
    np.testing.assert_allclose(tf_boxes.resized_crop(tf.constant(images), tf.constant(boxes, tf.int32)).numpy(),
                               as_nhwc(torch_boxes.resized_crop(nchw(images), torch.tensor(boxes))), atol=1e-6)
    np.testing.assert_array_equal(tf_boxes.erase(tf.constant(images), tf.constant(boxes, tf.int32), 0.0).numpy(),
                                  as_nhwc(torch_boxes.erase(nchw(images), torch.tensor(boxes), 0.0)))


def test_policy_ops_at_explicit_magnitudes_match_torch():
    images = rgb(14, 9, 9)
    op_index = np.arange(len(AUGMENT_POLICY_OPS))
    magnitude = np.array([0.0, 0.3, -0.3, 5.7, -3.2, 30.0, 0.5, -0.5, 0.3, 0.9, 4.0, 0.5, 0.0, 0.0], np.float32)
    got = tfa.apply_policy_ops(tf.constant(images), tf.constant(op_index, tf.int32), tf.constant(magnitude))
    expected = as_nhwc(tha.apply_policy_ops(nchw(images), torch.tensor(op_index), torch.tensor(magnitude)))
    np.testing.assert_allclose(got.numpy(), expected, atol=2e-5)  # the warps: bilinear kernels of each framework


# ---- the same behaviour from TensorFlow's own draws


def test_random_resized_crop_scale_1_ratio_1_is_the_identity_and_the_fallback_the_centre_crop():
    square = rgb(6, 6, 6)
    np.testing.assert_array_equal(run_ops([{"op": "random_resized_crop", "scale": [1, 1], "ratio": [1, 1]}], square),
                                  square)
    wide = np.random.default_rng(1).random((3, 4, 40, 1), dtype=np.float32)
    out = run_ops([{"op": "random_resized_crop", "scale": [1, 1], "ratio": [1, 1]}], wide)
    np.testing.assert_array_equal(out, tf_boxes.resized_crop(tf.constant(wide), tf.constant([[0, 18, 4, 4]] * 3)))


def test_random_resized_crop_boxes_are_distributed_as_torchs():
    # Distribution (TensorFlow's draws are not torch's, and torch's follow torchvision's): the mean and spread
    # of the area fraction and aspect ratio of 2000 boxes match 2000 of torch's on 32 x 24 images.
    scale, ratio = [0.2, 0.9], [0.5, 2.0]
    ours = tf_boxes.crop_boxes(tf.constant([3, 4]), tf.zeros([2000, 32, 24, 1]), scale, ratio).numpy()
    theirs = torch_boxes.crop_boxes(tha.make_generator("cpu", 0, 0, 0), torch.zeros(2000, 1, 32, 24), scale,
                                    ratio).numpy()
    for stat in (lambda b: b[:, 2] * b[:, 3] / 768, lambda b: b[:, 3] / b[:, 2]):
        assert abs(stat(ours).mean() - stat(theirs).mean()) < 0.03 and abs(stat(ours).std() - stat(theirs).std()) < 0.03
    assert np.all(ours[:, 0] + ours[:, 2] <= 32) and np.all(ours[:, 1] + ours[:, 3] <= 24) and ours.min() >= 0


def test_color_jitter_brightness_alone_is_one_factor_per_sample_and_hue_needs_rgb():
    images = rgb(32, 6, 6) * 0.4 + 0.2
    out = run_ops([{"op": "color_jitter", "brightness": 0.5, "contrast": 0, "saturation": 0}], images)
    factor = (out / images).reshape(32, -1)
    assert np.allclose(factor, factor[:, :1], atol=1e-5) and np.all((factor >= 0.5 - 1e-6) & (factor <= 1.5 + 1e-6))
    assert len(np.unique(factor[:, 0])) == 32
    with pytest.raises(ValueError, match=r"color_jitter\.hue: got 0\.2 for images with 1 channel\(s\)"):
        run_ops([{"op": "color_jitter", "hue": 0.2}], images[..., :1])


@pytest.mark.parametrize("op", [{"op": "color_jitter", "hue": 0.1}, {"op": "randaugment"},
                                {"op": "trivialaugment"}, {"op": "random_erasing", "value": "random"}])
def test_random_ops_trace_draw_per_sample_and_reproduce(op):
    images = tf.constant(np.repeat(rgb(1, 8, 8), 8, axis=0))
    augmenter = tfa.build_augmenter(resolve_ops("none", [op]), 10)
    traced = tf.function(lambda x, seed: augmenter.train_batch(x, tf.zeros([8], tf.int32), seed)[0])
    out = traced(images, tfa.step_seed(0, 1, 0, 0)).numpy()
    assert len({o.tobytes() for o in out}) >= 3  # samples got different draws
    np.testing.assert_array_equal(traced(images, tfa.step_seed(0, 1, 0, 0)).numpy(), out)
    assert not np.allclose(traced(images, tfa.step_seed(0, 1, 0, 1)).numpy(), out)


def test_random_erasing_erases_one_box_per_sample_of_the_expected_area():
    # Distribution: torchvision's default scale [0.02, 0.33] erases about 0.17 of a 20 x 24 image on average
    # (the torch test compares the same mean with torchvision's own RandomErasing).
    images = np.ones((2000, 20, 24, 1), np.float32)
    erased = run_ops([{"op": "random_erasing", "p": 1.0}], images) == 0
    assert 0.14 < erased.mean() < 0.2
    square = run_ops([{"op": "random_erasing", "p": 1.0, "scale": [0.25, 0.25], "ratio": [1, 1]}],
                     np.ones((8, 12, 12, 3), np.float32)) == 0
    assert np.all(square.reshape(8, -1).sum(1) == 36 * 3)  # a 6 x 6 box in every channel
    np.testing.assert_array_equal(run_ops([{"op": "random_erasing", "p": 0.0}], images[:4]), images[:4])


# ---- a user op


def test_a_user_op_gets_its_params_and_a_stateless_seed_that_replays_per_step():
    # The op's seed is a function of (train.seed, epoch, rank, step, op index): a resumed run replays it.
    images = np.zeros((8, 4, 4, 1), np.float32)
    op = [{"op": "tests.backends.user_augment:stateless_offsets", "amount": 0.3}]
    out = run_ops(op, images)
    offsets = out[:, 0, 0, 0]
    assert np.all(out == offsets[:, None, None, None]) and np.all(np.abs(offsets) <= 0.3)
    assert len(np.unique(offsets)) == 8
    np.testing.assert_array_equal(run_ops(op, images), out)
    assert not np.array_equal(run_ops(op, images, step=1), out)


def test_a_user_factorys_keras_layer_draws_from_its_seed_generators_set_from_the_ops_seed():
    images = np.random.default_rng(0).random((8, 8, 8, 3), dtype=np.float32)
    op = [{"op": "tests.backends.user_augment:keras_rotation", "factor": 0.3}]
    out = run_ops(op, images)
    assert len({o.tobytes() for o in out}) == 8 and not np.array_equal(out, images)
    np.testing.assert_array_equal(run_ops(op, images), out)  # a new layer, the same step: the same draws
    assert not np.array_equal(run_ops(op, images, step=1), out)
