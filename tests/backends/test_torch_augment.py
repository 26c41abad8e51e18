"""The PyTorch augmentation ops: what each op does to a batch, per-sample randomness, seeding, mixing."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from raykit.augment import OPS, UNIT_RANGE_OPS, resolve_ops
from raykit.backends.torch.augment import (build_augmenter, crop, cutmix, make_generator, preview_png,
                                           rotation_matrix, shear_matrix, shift_matrix, soft_cross_entropy, warp)


def augment(ops, images, labels=None, seed=0, num_classes=10):
    """Run ``ops`` (partial dicts) over ``images`` once with a fixed generator."""
    labels = torch.zeros(len(images), dtype=torch.int64) if labels is None else labels
    augmenter = build_augmenter(resolve_ops("none", ops), num_classes, seed)
    return augmenter.train_batch(images, labels, make_generator("cpu", seed, 1, 0))


def same_images(n=32, size=8, channels=1):
    """n copies of one asymmetric random image: any difference between samples comes from augmenting."""
    one = torch.rand(1, channels, size, size, generator=torch.Generator().manual_seed(1))
    return one.expand(n, -1, -1, -1).contiguous()


def blob(size=16, top=6, left=6, side=4):
    """A (1, 1, size, size) image: zeros with a ones square."""
    image = torch.zeros(1, 1, size, size)
    image[..., top:top + side, left:left + side] = 1.0
    return image


def centroid(images):
    """(N, 2) centre of mass (row, column) of each single-channel image."""
    mass = images[:, 0]
    rows = torch.arange(mass.shape[1], dtype=mass.dtype)[None, :, None]
    cols = torch.arange(mass.shape[2], dtype=mass.dtype)[None, None, :]
    total = mass.sum(dim=(1, 2))
    return torch.stack([(mass * rows).sum(dim=(1, 2)) / total, (mass * cols).sum(dim=(1, 2)) / total], 1)


def distinct(images):
    return len({tuple(image.flatten().tolist()) for image in images})


# ---- each op changes the batch as specified


def test_hflip_with_p_1_mirrors_left_right_and_p_0_is_identity():
    images = torch.rand(4, 3, 5, 6)
    assert torch.equal(augment([{"op": "hflip", "p": 1.0}], images)[0], images.flip(-1))
    assert torch.equal(augment([{"op": "hflip", "p": 0.0}], images)[0], images)


def test_vflip_with_p_1_mirrors_top_bottom_and_p_0_is_identity():
    images = torch.rand(4, 3, 5, 6)
    assert torch.equal(augment([{"op": "vflip", "p": 1.0}], images)[0], images.flip(-2))
    assert torch.equal(augment([{"op": "vflip", "p": 0.0}], images)[0], images)


def test_flip_probability_is_per_sample():
    images = same_images(64)
    out, _ = augment([{"op": "hflip", "p": 0.5}], images)
    flipped = (out == images.flip(-1)).flatten(1).all(1)
    kept = (out == images).flatten(1).all(1)
    assert bool((flipped | kept).all()) and 10 < int(flipped.sum()) < 54


def test_crop_at_explicit_offsets_is_the_padded_image_window():
    images = torch.rand(3, 2, 6, 7)
    offsets = torch.tensor([[0, 0], [2, 1], [4, 4]])
    padded = F.pad(images, (2, 2, 2, 2))
    out = crop(images, 2, offsets)
    for n, (dy, dx) in enumerate(offsets.tolist()):
        assert torch.equal(out[n], padded[n, :, dy:dy + 6, dx:dx + 7])


def test_random_crop_keeps_shape_and_takes_a_per_sample_window_of_the_padded_image():
    images = same_images(32, size=8)
    out, _ = augment([{"op": "random_crop", "padding": 2}], images)
    assert out.shape == images.shape
    padded = F.pad(images[0], (2, 2, 2, 2))
    windows = {(dy, dx): padded[:, dy:dy + 8, dx:dx + 8] for dy in range(5) for dx in range(5)}
    found = [next(k for k, w in windows.items() if torch.equal(w, image)) for image in out]
    assert len(set(found)) > 5  # offsets differ between samples


def test_rotation_by_90_degrees_is_rot90_counterclockwise():
    images = torch.rand(2, 3, 7, 7)
    out = warp(images, rotation_matrix(torch.tensor([90.0, -90.0])))
    assert torch.allclose(out[0], torch.rot90(images[0], 1, dims=(-2, -1)), atol=1e-5)
    assert torch.allclose(out[1], torch.rot90(images[1], -1, dims=(-2, -1)), atol=1e-5)


def test_random_rotation_is_per_sample_and_zero_degrees_is_identity():
    images = same_images(16, size=8)
    assert torch.allclose(augment([{"op": "rotate", "degrees": 0}], images)[0], images, atol=1e-5)
    out, _ = augment([{"op": "rotate", "degrees": 30}], images)
    assert distinct(out) == 16


def test_shift_moves_the_mass_by_the_given_pixels():
    out = warp(blob(), shift_matrix(torch.tensor([2.0]), torch.tensor([-3.0])))
    assert torch.allclose(centroid(out) - centroid(blob()), torch.tensor([[-3.0, 2.0]]), atol=1e-4)


def test_random_shift_moves_each_sample_within_the_fraction_of_the_size():
    images = blob().expand(16, -1, -1, -1)
    out, _ = augment([{"op": "shift", "width": 0.25, "height": 0.0}], images)
    moved = centroid(out) - centroid(images)
    assert torch.allclose(moved[:, 0], torch.zeros(16), atol=1e-4)
    assert bool((moved[:, 1].abs() <= 4 + 1e-4).all()) and moved[:, 1].unique().numel() == 16


def test_shear_slides_rows_by_tan_of_the_angle_times_their_height():
    image = torch.zeros(1, 1, 16, 16)
    image[..., 7:9] = 1.0  # a vertical bar around the centre column x = 8 (edge coordinates)
    out = warp(image, shear_matrix(torch.tensor([20.0])))[0, 0]
    cols = torch.arange(16.0) + 0.5
    for row in (3, 12):
        y = row + 0.5 - 8
        centre = (out[row] * cols).sum() / out[row].sum()
        assert abs(float(centre) - (8 + math.tan(math.radians(20)) * y)) < 0.05


def test_random_shear_is_per_sample():
    out, _ = augment([{"op": "shear", "degrees": 30}], same_images(16))
    assert distinct(out) == 16


def test_zoom_in_enlarges_the_centre_and_zoom_out_shrinks_it():
    image = blob(16, 6, 6, 4).expand(8, -1, -1, -1)
    bigger, _ = augment([{"op": "zoom", "range": [2.0, 2.0]}], image)
    smaller, _ = augment([{"op": "zoom", "range": [0.5, 0.5]}], image)
    assert torch.allclose(bigger.sum(dim=(1, 2, 3)), torch.full((8,), 64.0), atol=1e-3)  # 4x the area
    assert torch.allclose(smaller.sum(dim=(1, 2, 3)), torch.full((8,), 4.0), atol=1e-3)
    assert torch.allclose(centroid(bigger), centroid(image), atol=1e-4)


def test_random_zoom_is_per_sample():
    out, _ = augment([{"op": "zoom", "range": [0.8, 1.25]}], same_images(16))
    assert distinct(out) == 16


def test_brightness_adds_one_bounded_offset_per_sample():
    images = same_images(32, channels=3)
    out, _ = augment([{"op": "brightness", "delta": 0.3}], images)
    offset = (out - images).flatten(1)
    assert torch.allclose(offset, offset[:, :1].expand_as(offset), atol=1e-6)  # constant per sample
    assert bool((offset.abs() <= 0.3 + 1e-6).all()) and offset[:, 0].unique().numel() == 32


def test_contrast_keeps_each_mean_and_scales_the_spread_per_sample():
    images = same_images(32, channels=3)
    out, _ = augment([{"op": "contrast", "range": [0.5, 1.5]}], images)
    mean = images.mean(dim=(1, 2, 3), keepdim=True)  # over channels and pixels, not per channel
    ratio = ((out - mean) / (images - mean)).flatten(1)
    factor = ratio[:, :1]
    assert torch.allclose(ratio, factor.expand_as(ratio), atol=1e-3)  # one factor for the whole image
    assert bool(((factor >= 0.5 - 1e-4) & (factor <= 1.5 + 1e-4)).all()) and factor.unique().numel() > 20


def test_normalize_is_exact_per_channel_and_applied_at_eval():
    images = torch.rand(2, 3, 4, 4)
    ops = resolve_ops("none", [{"op": "normalize", "mean": [0.1, 0.2, 0.3], "std": [0.5, 0.25, 2.0]}])
    augmenter = build_augmenter(ops, 10, 0)
    expected = (images - torch.tensor([0.1, 0.2, 0.3])[:, None, None]) / torch.tensor([0.5, 0.25, 2.0])[:, None, None]
    assert torch.allclose(augmenter.eval_batch(images), expected)
    train, _ = augmenter.train_batch(images, torch.zeros(2, dtype=torch.int64), make_generator("cpu", 0, 0, 0))
    assert torch.allclose(train, expected)
    broadcast = build_augmenter(resolve_ops("standard", []), 10, 0).eval_batch(images)
    assert torch.allclose(broadcast, (images - 0.5) / 0.5)


def test_normalize_refuses_a_channel_count_that_does_not_match():
    augmenter = build_augmenter(resolve_ops("none", [{"op": "normalize", "mean": [0.1, 0.2]}]), 10, 0)
    with pytest.raises(ValueError, match=r"normalize\.mean: got \[0\.1, 0\.2\].*3 channels"):
        augmenter.eval_batch(torch.rand(1, 3, 4, 4))


def test_eval_batch_skips_random_ops_and_no_ops_is_identity():
    images = torch.rand(4, 1, 8, 8)
    randoms = [{"op": name} for name in OPS if name != "normalize"]
    assert torch.equal(build_augmenter(resolve_ops("none", randoms), 10, 0).eval_batch(images), images)
    identity = build_augmenter([], 10, 0)
    out, targets = identity.train_batch(images, torch.arange(4), make_generator("cpu", 0, 0, 0))
    assert identity.is_identity and out is images and torch.equal(targets, torch.arange(4))
    assert not build_augmenter(resolve_ops("light", []), 10, 0).is_identity


# ---- mixing


def one_hot_images(n, size=1):
    """Sample i is 1 in channel i: the mixed image's channel means are its true mixing weights."""
    return torch.eye(n)[:, :, None, None].expand(n, n, size, size).contiguous()


def test_mixup_targets_are_the_image_mixing_weights_with_the_partner_label():
    images, labels = one_hot_images(8), torch.arange(8)
    out, targets = augment([{"op": "mixup", "alpha": 1.0}], images, labels, num_classes=8)
    assert targets.dtype == torch.float32 and targets.shape == (8, 8)
    assert torch.allclose(targets.sum(1), torch.ones(8))
    assert torch.allclose(targets, out.flatten(1), atol=1e-6)  # lam on y, 1 - lam on y[perm]
    assert ((targets > 0).sum(1) == 2).any()  # some sample really has a partner
    lams = {round(float(row.max()), 5) for row in targets if (row > 0).sum() == 2}
    assert len(lams) == 1  # one lam per batch


def test_cutmix_lam_equals_the_pasted_area_and_targets_use_the_partner_label():
    images, labels = one_hot_images(6, size=8), torch.arange(6)
    out, targets = augment([{"op": "cutmix", "alpha": 1.0}], images, labels, num_classes=6, seed=3)
    assert torch.allclose(targets.sum(1), torch.ones(6))
    assert torch.allclose(targets, out.mean(dim=(2, 3)), atol=1e-6)  # per-channel area = label weight
    assert set(out.unique().tolist()) <= {0.0, 1.0}  # pasted, not blended
    assert ((targets > 0).sum(1) == 2).any()


def test_cutmix_box_is_top_bottom_left_right_and_lam_the_area_that_stayed():
    images = torch.arange(2.0)[:, None, None, None].expand(2, 1, 4, 6).contiguous()  # all 0s, all 1s
    mixed, lam = cutmix(images, torch.tensor([1, 0]), (1, 3, 2, 5))
    expected = torch.zeros(4, 6)
    expected[1:3, 2:5] = 1.0  # rows 1-2, columns 2-4 come from the partner
    assert torch.equal(mixed[0, 0], expected) and lam == 1 - 6 / 24


def test_mixing_with_p_0_returns_the_labels_unchanged():
    images, labels = torch.rand(4, 1, 4, 4), torch.tensor([3, 1, 2, 0])
    out, targets = augment([{"op": "mixup", "p": 0.0}, {"op": "cutmix", "p": 0.0}], images, labels)
    assert targets is labels and torch.equal(out, images)


def test_soft_cross_entropy_matches_cross_entropy_and_handles_soft_targets():
    logits, labels = torch.randn(5, 4), torch.tensor([0, 3, 1, 1, 2])
    onehot = F.one_hot(labels, 4).float()
    for smoothing in (0.0, 0.1):
        expected = F.cross_entropy(logits, labels, label_smoothing=smoothing)
        assert torch.allclose(soft_cross_entropy(logits, labels, smoothing), expected)
        assert torch.allclose(soft_cross_entropy(logits, onehot, smoothing), expected)
    half = torch.full((5, 4), 0.25)
    assert torch.allclose(soft_cross_entropy(logits, half), -(F.log_softmax(logits, 1).mean(1)).mean())


def test_an_op_that_skipped_validation_is_refused_naming_the_op_and_the_backend():
    augmenter = build_augmenter(resolve_ops("standard", []), 10, 0)
    augmenter.ops.append({"op": "solarize"})  # built by hand, never resolved
    with pytest.raises(ValueError, match="augment: op 'solarize' has no torch kernel; accepted by the torch "
                                         "backend: random_crop, hflip"):
        augmenter.train_batch(torch.rand(2, 1, 4, 4), torch.zeros(2, dtype=torch.int64), make_generator("cpu", 0, 0, 0))


# ---- seeding, shapes, preview


# Every op; the ones that need pixels in [0, 1] first, as validation requires them before normalize.
ALL_OPS = [{"op": name} for name in sorted(OPS, key=lambda name: name not in UNIT_RANGE_OPS)]


def test_same_seed_epoch_and_rank_reproduce_and_any_change_differs():
    images, labels = torch.rand(8, 3, 8, 8), torch.arange(8) % 10
    augmenter = build_augmenter(resolve_ops("none", ALL_OPS), 10, 0)

    def run(seed, epoch, rank):
        return augmenter.train_batch(images, labels, make_generator("cpu", seed, epoch, rank))

    first, again = run(1, 2, 0), run(1, 2, 0)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    for other in (run(2, 2, 0), run(1, 3, 0), run(1, 2, 1)):
        assert not torch.equal(first[0], other[0])


@pytest.mark.parametrize("shape", [(5, 1, 8, 8), (5, 3, 32, 32)])
def test_every_op_and_preset_works_on_digits_and_cifar_shapes(shape):
    images, labels = torch.rand(shape), torch.tensor([0, 1, 2, 3, 4])
    for preset in ("light", "standard"):
        out, targets = augment(resolve_ops(preset, []), images, labels)
        assert out.shape == shape and torch.equal(targets, labels)
    out, targets = augment(ALL_OPS, images, labels)
    assert out.shape == shape and out.dtype == torch.float32 and bool(torch.isfinite(out).all())
    assert targets.shape == (5, 10) and torch.allclose(targets.sum(1), torch.ones(5))


def test_preview_png_is_a_png_for_grayscale_and_colour():
    for channels in (1, 3):
        images = np.random.default_rng(0).random((6, 8, 8, channels), dtype=np.float32)
        png = preview_png(images, resolve_ops("standard", [{"op": "rotate"}]), seed=0, rows=2)
        assert png.startswith(b"\x89PNG")
