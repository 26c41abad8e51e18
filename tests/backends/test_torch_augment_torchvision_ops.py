"""The torch kernels of the ops that follow torchvision's transforms (random_resized_crop, color_jitter,
randaugment, trivialaugment, random_erasing): pixel for pixel against torchvision's v2 functionals where the
random draw can be fixed, and as distributions (compared with torchvision's own draws) where it cannot."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from raykit.augment import AUGMENT_POLICY_OPS, policy_magnitudes, resolve_ops
from raykit.backends.torch import augment_boxes as boxes_mod
from raykit.backends.torch import augment_color as color
from raykit.backends.torch.augment import (apply_policy_ops, build_augmenter, make_generator, rotation_matrix,
                                           shear_matrix, shift_matrix, warp)


def augment(ops, images, seed=0):
    augmenter = build_augmenter(resolve_ops("none", ops), 10, seed)
    return augmenter.train_batch(images, torch.zeros(len(images), dtype=torch.int64),
                                 make_generator("cpu", seed, 1, 0))[0]


def rgb(n=4, height=9, width=7, seed=0):
    images = torch.rand(n, 3, height, width, generator=torch.Generator().manual_seed(seed))
    images[0, :, :2, :2] = 0.5  # gray pixels: hue and saturation are undefined there
    return images


def per_sample(function, images, values):
    """torchvision's functional applied sample by sample with its own value."""
    return torch.stack([function(image, value) for image, value in zip(images, values.tolist())])


# ---- random_resized_crop


def test_resized_crop_of_explicit_boxes_equals_torchvisions_resized_crop():
    images = rgb()
    boxes = torch.tensor([[0, 0, 9, 7], [2, 1, 4, 5], [5, 3, 3, 2], [8, 6, 1, 1]])  # top, left, height, width
    out = boxes_mod.resized_crop(images, boxes)
    for image, got, (top, left, height, width) in zip(images, out, boxes.tolist()):
        expected = TF.resized_crop(image, top, left, height, width, [9, 7], antialias=True)
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)


def test_random_resized_crop_with_scale_1_and_ratio_1_is_the_identity_on_square_images():
    images = torch.rand(8, 3, 6, 6)
    assert torch.equal(augment([{"op": "random_resized_crop", "scale": [1, 1], "ratio": [1, 1]}], images), images)


def test_random_resized_crop_falls_back_to_the_centre_crop_when_no_box_fits():
    # 4 x 40 at full area and ratio 1: a 13 x 13 box never fits, so every sample is the centred 4 x 4 box.
    images = torch.rand(3, 1, 4, 40)
    out = augment([{"op": "random_resized_crop", "scale": [1, 1], "ratio": [1, 1]}], images)
    expected = boxes_mod.resized_crop(images, torch.tensor([[0, 18, 4, 4]] * 3))
    assert torch.equal(out, expected)


def test_random_resized_crop_boxes_are_distributed_as_torchvisions():
    # Not exact (torchvision draws one box at a time from the global RNG): compare the area fraction and the
    # aspect ratio of 2000 boxes with 2000 of torchvision's RandomResizedCrop.get_params on 32 x 24 images.
    scale, ratio = [0.2, 0.9], [0.5, 2.0]
    images = torch.zeros(2000, 1, 32, 24)
    ours = boxes_mod.crop_boxes(make_generator("cpu", 0, 0, 0), images, scale, ratio).double()
    torch.manual_seed(0)
    theirs = torch.tensor([v2.RandomResizedCrop.get_params(images[0], scale, ratio) for _ in range(2000)]).double()
    for got, reference in ((ours[:, 2] * ours[:, 3] / 768, theirs[:, 2] * theirs[:, 3] / 768),
                           (ours[:, 3] / ours[:, 2], theirs[:, 3] / theirs[:, 2])):
        assert abs(float(got.mean() - reference.mean())) < 0.03, (got.mean(), reference.mean())
        assert abs(float(got.std() - reference.std())) < 0.03
    assert bool((ours[:, 0] + ours[:, 2] <= 32).all() and (ours[:, 1] + ours[:, 3] <= 24).all())


# ---- color_jitter


@pytest.mark.parametrize("name, values", [
    ("adjust_brightness", [0.0, 0.5, 1.3, 2.0]), ("adjust_contrast", [0.0, 0.5, 1.3, 2.0]),
    ("adjust_saturation", [0.0, 0.5, 1.3, 2.0]), ("adjust_sharpness", [0.0, 0.5, 1.3, 2.0]),
    ("adjust_hue", [-0.5, -0.1, 0.25, 0.5]), ("posterize", [8, 6, 4, 1]), ("solarize", [1.0, 0.5, 0.2, 0.0])])
def test_colour_functions_with_one_value_per_sample_equal_torchvisions(name, values):
    images = rgb()
    values_t = torch.tensor(values)
    expected = per_sample(getattr(TF, name), images, values_t)
    torch.testing.assert_close(getattr(color, name)(images, values_t), expected, atol=1e-6, rtol=0)
    if name in ("adjust_contrast", "adjust_saturation", "adjust_sharpness"):  # one channel: torchvision's rules
        torch.testing.assert_close(getattr(color, name)(images[:, :1], values_t),
                                   per_sample(getattr(TF, name), images[:, :1], values_t), atol=1e-6, rtol=0)


def test_autocontrast_and_equalize_equal_torchvisions_also_for_flat_and_dark_images():
    images = torch.cat([rgb(), torch.full((1, 3, 9, 7), 0.3), rgb(1, seed=5) * 0.2])
    torch.testing.assert_close(color.autocontrast(images), TF.autocontrast(images), atol=1e-6, rtol=0)
    torch.testing.assert_close(color.equalize(images), TF.equalize(images), atol=1e-6, rtol=0)


def test_color_jitter_brightness_alone_multiplies_each_sample_by_one_factor_in_range():
    images = torch.rand(32, 3, 6, 6) * 0.4 + 0.2  # <= 0.6: a factor <= 1.5 never clamps
    out = augment([{"op": "color_jitter", "brightness": 0.5, "contrast": 0, "saturation": 0}], images)
    factor = (out / images).flatten(1)
    first = factor[:, :1]
    assert bool(((factor - first).abs() < 1e-5).all())  # one factor per sample
    assert bool(((first >= 0.5 - 1e-6) & (first <= 1.5 + 1e-6)).all()) and first.unique().numel() == 32


def test_color_jitter_applies_its_adjustments_in_a_random_order_per_sample():
    # Reproduce the kernel's draws (brightness factors, contrast factors, then the order): each sample is
    # exactly the two adjustments in the order drawn for it, and both orders occur.
    images = rgb(64, 5, 5)
    out = augment([{"op": "color_jitter", "brightness": 0.8, "contrast": 0.8, "saturation": 0}], images, seed=3)
    generator = make_generator("cpu", 3, 1, 0)
    bright = torch.rand(64, generator=generator) * 1.6 + 0.2
    contrast = torch.rand(64, generator=generator) * 1.6 + 0.2
    order = torch.rand(64, 2, generator=generator).argsort(dim=1)
    brightness_first = color.adjust_contrast(color.adjust_brightness(images, bright), contrast)
    contrast_first = color.adjust_brightness(color.adjust_contrast(images, contrast), bright)
    expected = torch.where((order[:, 0] == 0)[:, None, None, None], brightness_first, contrast_first)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)
    assert 10 < int((order[:, 0] == 0).sum()) < 54


def test_color_jitter_hue_on_images_that_are_not_rgb_is_refused_naming_op_parameter_and_value():
    with pytest.raises(ValueError, match=r"color_jitter\.hue: got 0\.1 for images with 1 channel\(s\); accepted: "
                                         r"hue 0 unless the images are RGB"):
        augment([{"op": "color_jitter", "hue": 0.1}], torch.rand(2, 1, 4, 4))
    assert augment([{"op": "color_jitter"}], torch.rand(2, 1, 4, 4)).shape == (2, 1, 4, 4)  # default hue 0


# ---- randaugment, trivialaugment


def test_policy_colour_ops_at_explicit_magnitudes_equal_torchvisions():
    images = rgb(8)
    names = ["brightness", "color", "contrast", "sharpness", "posterize", "solarize", "autocontrast", "equalize"]
    magnitude = torch.tensor([0.5, -0.5, 0.3, 0.9, 4.0, 0.5, 0.0, 0.0])
    out = apply_policy_ops(images, torch.tensor([AUGMENT_POLICY_OPS.index(n) for n in names]), magnitude)
    reference = {"brightness": lambda x, m: TF.adjust_brightness(x, 1 + m),
                 "color": lambda x, m: TF.adjust_saturation(x, 1 + m),
                 "contrast": lambda x, m: TF.adjust_contrast(x, 1 + m),
                 "sharpness": lambda x, m: TF.adjust_sharpness(x, 1 + m),
                 "posterize": lambda x, m: TF.posterize(x, int(m)), "solarize": lambda x, m: TF.solarize(x, m),
                 "autocontrast": lambda x, m: TF.autocontrast(x), "equalize": lambda x, m: TF.equalize(x)}
    for n, name in enumerate(names):
        torch.testing.assert_close(out[n], reference[name](images[n], float(magnitude[n])), atol=1e-6, rtol=0)


def test_policy_geometric_ops_are_the_catalogues_warps_with_torchvisions_magnitudes():
    images = rgb(6)
    magnitude = torch.tensor([0.0, 0.3, -0.3, 2.7, -3.2, 30.0])
    out = apply_policy_ops(images, torch.arange(6), magnitude)
    assert torch.equal(out[0], images[0])  # identity
    shear = torch.tensor([math.degrees(math.atan(0.3))])
    torch.testing.assert_close(out[1:2], warp(images[1:2], shear_matrix(shear)))  # about the centre
    torch.testing.assert_close(out[2:3].transpose(-1, -2), warp(images[2:3].transpose(-1, -2), shear_matrix(-shear)))
    # translations in whole pixels, truncated like torchvision's int(magnitude): 2 right, 3 up
    torch.testing.assert_close(out[3:4], warp(images[3:4], shift_matrix(torch.tensor([2.0]), torch.tensor([0.0]))))
    torch.testing.assert_close(out[4:5], warp(images[4:5], shift_matrix(torch.tensor([0.0]), torch.tensor([-3.0]))))
    torch.testing.assert_close(out[5:6], warp(images[5:6], rotation_matrix(torch.tensor([30.0]))))


def test_randaugment_picks_each_op_uniformly_per_sample():
    # Distribution, not exact: with one op per sample at magnitude 9 only "identity" leaves an image as it is,
    # so about 1/14 of 1400 samples (100, sd 9.6) stay unchanged.
    images = rgb(1, 6, 6).expand(1400, -1, -1, -1).contiguous()
    out = augment([{"op": "randaugment", "num_ops": 1, "magnitude": 9}], images)
    unchanged = int((out == images).flatten(1).all(1).sum())
    assert 65 < unchanged < 135, unchanged
    assert len({tuple(image.flatten().tolist()) for image in out}) > 14  # signs and ops differ per sample


def test_randaugment_magnitude_0_and_trivialaugment_stay_in_unit_range_and_reproduce():
    images = rgb(16, 8, 8)
    calm = augment([{"op": "randaugment", "num_ops": 3, "magnitude": 0}], images)
    # bin 0 is the identity for every op but posterize (8 bits), solarize (threshold 1), autocontrast, equalize
    assert (calm - images).abs().max() <= 1.0 and bool(((calm >= 0) & (calm <= 1)).all())
    for op in ({"op": "trivialaugment"}, {"op": "randaugment", "num_ops": 2, "magnitude": 30}):
        out = augment([op], images)
        assert bool(((out >= 0) & (out <= 1)).all()) and torch.equal(out, augment([op], images))
        assert not torch.equal(out, augment([op], images, seed=1))


def test_trivialaugment_draws_a_uniform_bin_per_sample():
    # Distribution: brightness factors 1 +- magnitude of a uniform bin: |factor - 1| spreads over [0, 0.99].
    from raykit.backends.torch.augment import _policy_draw
    op_index, magnitude = _policy_draw(make_generator("cpu", 0, 0, 0), torch.zeros(3000, 1, 8, 8),
                                       "trivialaugment", None)
    table = torch.tensor(policy_magnitudes("trivialaugment", 8, 8))
    rotate = op_index == AUGMENT_POLICY_OPS.index("rotate")
    assert 150 < int(rotate.sum()) < 280  # 3000 / 14 = 214
    bins = (magnitude[rotate].abs()[:, None] - table[AUGMENT_POLICY_OPS.index("rotate")]).abs().argmin(1)
    assert bins.unique().numel() > 25 and abs(float(bins.float().mean()) - 15) < 2.5
    assert 0.35 < float((magnitude[rotate] < 0).float().mean()) < 0.65  # signed


# ---- random_erasing


def test_erase_sets_exactly_the_box_to_the_fill():
    images = torch.rand(2, 3, 6, 5)
    out = boxes_mod.erase(images, torch.tensor([[1, 2, 3, 2], [0, 0, 0, 0]]), 0.0)
    expected = images.clone()
    expected[0, :, 1:4, 2:4] = 0.0
    assert torch.equal(out, expected)  # the second sample's empty box erases nothing


def test_random_erasing_with_p_0_is_the_identity_and_p_1_erases_one_box_per_sample():
    images = torch.rand(16, 3, 12, 12) + 1.0  # > 0: an erased pixel is one that is 0
    assert torch.equal(augment([{"op": "random_erasing", "p": 0.0}], images), images)
    out = augment([{"op": "random_erasing", "p": 1.0, "scale": [0.25, 0.25], "ratio": [1, 1]}], images)
    erased = (out == 0).all(1)  # (N, H, W): all channels
    assert bool(((out == 0) == erased[:, None]).all())  # whole pixels, every channel
    assert bool((erased.flatten(1).sum(1) == 36).all())  # a 6 x 6 square: round(sqrt(144 / 4))
    rows, cols = erased.any(2), erased.any(1)
    assert bool((rows.sum(1) == 6).all() and (cols.sum(1) == 6).all())  # one rectangle per sample


def test_random_erasing_value_random_is_standard_normal_noise_inside_the_box_only():
    images = torch.rand(64, 3, 16, 16) + 2.0
    inside = augment([{"op": "random_erasing", "p": 1.0, "value": 0}], images) == 0  # the same seed's boxes
    out = augment([{"op": "random_erasing", "p": 1.0, "value": "random"}], images)
    assert bool((out[~inside] == images[~inside]).all())
    noise = out[inside]
    assert noise.numel() > 1000 and abs(float(noise.mean())) < 0.1 and abs(float(noise.std()) - 1.0) < 0.1


def test_random_erasing_area_is_distributed_as_torchvisions():
    # Distribution, not exact: the mean and spread of the erased area fraction of 2000 samples with
    # torchvision's default scale and ratio match 2000 of torchvision's RandomErasing boxes on 20 x 24 images.
    images = torch.ones(2000, 1, 20, 24)
    ours = (augment([{"op": "random_erasing", "p": 1.0}], images) == 0).flatten(1).double().mean(1)
    torch.manual_seed(0)
    reference = v2.RandomErasing(p=1.0)
    theirs = torch.tensor([float((reference(images[0]) == 0).double().mean()) for _ in range(2000)])
    assert abs(float(ours.mean() - theirs.mean())) < 0.015, (ours.mean(), theirs.mean())
    assert abs(float(ours.std() - theirs.std())) < 0.015
    assert 0.14 < float(ours.mean()) < 0.2  # about the mean of U(0.02, 0.33), less what rounding and misses take
