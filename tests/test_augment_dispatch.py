"""The op dispatch every backend shares, run with recording stand-in kernels (no framework)."""

from __future__ import annotations

import dataclasses

import pytest

from raykit.augment import BATCH_OPS, MATRIX_OPS, OPS
from raykit.augment_dispatch import BaseAugmenter, Kernels, op_kind


class Maps:
    """Stands in for a batch of (N, 3, 3) maps; ``@`` records the order of composition."""

    def __init__(self, names: list[str]):
        self.names = names

    def __matmul__(self, other: Maps) -> Maps:
        return Maps(self.names + other.names)


def recording_kernels(calls: list) -> Kernels:
    """Kernels over "images" that are lists of what was applied; every kernel call lands in ``calls``."""
    def matrix(op, images, rng):
        calls.append((op["op"], rng))
        return Maps([op["op"]])

    def pixel(op, images, rng):
        calls.append((op["op"], rng))
        return images + [op["op"]]

    def batch(op, images, targets, rng, num_classes):
        calls.append((op["op"], rng))
        return images + [op["op"]], f"{targets}+{op['op']}/{num_classes}"

    return Kernels("fake", matrix=dict.fromkeys(MATRIX_OPS, matrix),
                   pixel={name: pixel for name in OPS if op_kind(name) == "pixel"},
                   batch=dict.fromkeys(BATCH_OPS, batch),
                   warp=lambda images, maps: images + ["warp " + "@".join(maps.names)],
                   op_rng=lambda rng, index: f"{rng}/{index}",
                   run_transform=lambda transform, name: lambda op, images, rng: transform(images + [f"seeded {rng}"]))


def augmenter(ops: list[dict]) -> tuple[BaseAugmenter, list]:
    calls: list = []
    return BaseAugmenter(ops, 10, recording_kernels(calls)), calls


def test_consecutive_matrix_ops_compose_in_order_and_warp_once_before_the_next_other_op():
    aug, _ = augmenter([{"op": "rotate"}, {"op": "shift"}, {"op": "hflip"}, {"op": "zoom"}, {"op": "shear"}])
    images, targets = aug.augment([], "labels", "seed")
    assert images == ["warp rotate@shift", "hflip", "warp zoom@shear"] and targets == "labels"


def test_each_op_draws_from_op_rng_of_the_batch_source_and_its_index():
    aug, calls = augmenter([{"op": "zoom"}, {"op": "brightness"}, {"op": "mixup"}])
    aug.augment([], "labels", "seed")
    assert calls == [("zoom", "seed/0"), ("brightness", "seed/1"), ("mixup", "seed/2")]


def test_batch_ops_take_and_return_the_targets_with_the_class_count_after_pending_maps_are_applied():
    aug, _ = augmenter([{"op": "rotate"}, {"op": "cutmix"}, {"op": "mixup"}])
    images, targets = aug.augment([], "labels", "seed")
    assert images == ["warp rotate", "cutmix", "mixup"] and targets == "labels+cutmix/10+mixup/10"


def test_eval_batch_applies_only_the_deterministic_ops_in_order_without_randomness():
    aug, calls = augmenter([{"op": "normalize", "mean": [0.1]}, {"op": "rotate"}, {"op": "hflip"},
                            {"op": "normalize"}])
    assert aug.eval_batch([]) == ["normalize", "normalize"]
    assert calls == [("normalize", None), ("normalize", None)]


def test_no_ops_is_the_identity_and_returns_the_same_objects():
    aug, calls = augmenter([])
    images, labels = [1], [2]
    out, targets = aug.augment(images, labels, "seed")
    assert aug.is_identity and out is images and targets is labels and aug.eval_batch(images) is images
    assert not augmenter([{"op": "hflip"}])[0].is_identity and calls == []


def test_the_ops_are_resolved_and_invalid_ones_refused_as_the_catalogue_says():
    aug, _ = augmenter([{"op": "rotate", "degrees": 30}])
    assert aug.ops == [{"op": "rotate", "degrees": 30.0}]
    with pytest.raises(ValueError, match=r"augment\.ops\[0\]\.op: got 'rotaet' \(did you mean 'rotate'\?\)"):
        augmenter([{"op": "rotaet"}])


def test_a_backend_missing_a_kernel_is_refused_when_the_augmenter_is_built_naming_op_backend_and_choices():
    kernels = recording_kernels([])
    kernels = dataclasses.replace(kernels, pixel={k: v for k, v in kernels.pixel.items() if k != "contrast"})
    assert kernels.missing() == ["contrast"]
    implemented = ", ".join(name for name in OPS if name != "contrast")
    with pytest.raises(ValueError) as info:
        BaseAugmenter([{"op": "hflip"}, {"op": "contrast"}], 10, kernels)
    assert str(info.value) == f"augment: op 'contrast' has no fake kernel; accepted by the fake backend: {implemented}"


def test_an_op_that_skipped_validation_is_refused_at_dispatch_naming_the_op_and_the_backend():
    aug, calls = augmenter([{"op": "hflip"}])
    aug.ops = [{"op": "hflip"}, {"op": "solarize", "threshold": 0.5}]  # built by hand, never resolved
    with pytest.raises(ValueError, match="augment: op 'solarize' has no fake kernel; accepted by the fake backend: "
                                         "random_crop, hflip"):
        aug.augment([], "labels", "seed")
    assert calls == [("hflip", "seed/0")]


def test_a_user_op_runs_as_a_pixel_op_with_its_params_and_its_own_rng_and_only_in_training():
    aug, calls = augmenter([{"op": "rotate"}, {"op": "tests.backends.user_augment:tag", "label": "mine"},
                            {"op": "hflip"}])
    images, _ = aug.augment([], "labels", "seed")
    assert images == ["warp rotate", "mine seed/1", "hflip"]  # pending maps applied first
    assert aug.eval_batch([]) == []


def test_a_user_factorys_transform_is_made_once_and_run_by_the_backends_run_transform():
    aug, _ = augmenter([{"op": "hflip"}, {"op": "tests.backends.user_augment:tagger", "label": "made"}])
    images, _ = aug.augment([], "labels", "seed")
    assert images == ["hflip", "seeded seed/1", "made"]
