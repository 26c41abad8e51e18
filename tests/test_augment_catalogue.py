"""The framework-neutral augmentation catalogue: ops, presets, validation messages, resolution; and that
every backend implements the whole catalogue the same way (kernel tables, unknown ops, cutmix boxes)."""

from __future__ import annotations

import importlib
import subprocess
import sys

import numpy as np
import pytest

from raykit.augment import (AUGMENT_POLICY_OPS, BATCH_OPS, MAGNITUDE_BINS, MATRIX_OPS, OPS, PRESETS, UNIT_RANGE_OPS,
                            AugmentError, check_param, fallback_crop, policy_magnitudes, resolve_ops, validate_ops)
from raykit.augment_dispatch import op_kind
from raykit.backends import BUILTIN, load_backend_module

# Every built-in backend implements the catalogue (their packages import no framework).
BACKENDS = tuple(importlib.import_module(package).INFO.name for package in BUILTIN)

EXPECTED_PARAMS = {
    "random_crop": {"padding": 4},
    "hflip": {"p": 0.5},
    "vflip": {"p": 0.5},
    "rotate": {"degrees": 15.0},
    "shift": {"width": 0.1, "height": 0.1},
    "shear": {"degrees": 10.0},
    "zoom": {"range": [0.9, 1.1]},
    "brightness": {"delta": 0.2},
    "contrast": {"range": [0.8, 1.2]},
    "normalize": {"mean": [0.5], "std": [0.5]},
    "mixup": {"alpha": 0.2, "p": 1.0},
    "cutmix": {"alpha": 1.0, "p": 1.0},
    "random_resized_crop": {"scale": [0.08, 1.0], "ratio": [0.75, 4 / 3]},
    "color_jitter": {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.0},
    "randaugment": {"num_ops": 2, "magnitude": 9},
    "trivialaugment": {},
    "random_erasing": {"p": 0.5, "scale": [0.02, 0.33], "ratio": [0.3, 3.3], "value": 0.0},
}


def test_catalogue_import_pulls_in_no_framework():
    code = ("import sys, raykit.augment, raykit.augment_dispatch; "
            "print(sorted(m for m in ('torch', 'tensorflow', 'ray') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_catalogue_lists_exactly_the_documented_ops_params_and_defaults():
    assert {name: {key: default for key, (_, default, _) in params.items()} for name, params in OPS.items()} \
        == EXPECTED_PARAMS


def test_every_default_is_a_valid_value_of_its_param():
    for name, params in OPS.items():
        for key, (_, default, _) in params.items():
            assert check_param(name, key, default) == "", (name, key)


def test_presets_are_the_documented_recipes():
    assert PRESETS["none"] == []
    assert [op["op"] for op in PRESETS["light"]] == ["shift", "rotate"]  # no flips: digits
    assert resolve_ops("standard", []) == [{"op": "random_crop", "padding": 4}, {"op": "hflip", "p": 0.5},
                                           {"op": "normalize", "mean": [0.5], "std": [0.5]}]
    for name, ops in PRESETS.items():
        assert validate_ops(ops) == [], name


def test_valid_ops_have_no_problems_and_ints_count_as_floats():
    ops = [{"op": "rotate", "degrees": 30}, {"op": "random_crop", "padding": 2.0}, {"op": "zoom", "range": [1, 1]},
           {"op": "normalize", "mean": [0.1, 0.2, 0.3], "std": [1, 2, 3]}, {"op": "cutmix"}]
    assert validate_ops(ops) == []


@pytest.mark.parametrize("item, path, fragments", [
    ("rotate", "augment.ops[0]", ["got 'rotate'", "accepted: a mapping"]),
    ({"degrees": 3}, "augment.ops[0].op", ["missing", "accepted: one of random_crop"]),
    ({"op": "rotaet"}, "augment.ops[0].op", ["got 'rotaet'", "did you mean 'rotate'?", "accepted: one of"]),
    ({"op": 7}, "augment.ops[0].op", ["got 7", "accepted: one of"]),
    ({"op": "rotate", "degree": 30}, "augment.ops[0].degree",
     ["got degree=30", "unknown parameter of 'rotate'", "did you mean 'degrees'?", "accepted: degrees"]),
    ({"op": "hflip", "p": True}, "augment.ops[0].p", ["got True (bool)", "accepted: a number >= 0 and <= 1"]),
    ({"op": "hflip", "p": 1.5}, "augment.ops[0].p", ["got 1.5", "accepted: a number >= 0 and <= 1"]),
    ({"op": "rotate", "degrees": -5}, "augment.ops[0].degrees", ["got -5", "accepted: a number >= 0"]),
    ({"op": "rotate", "degrees": "10"}, "augment.ops[0].degrees", ["got '10' (str)", "accepted: a number"]),
    ({"op": "random_crop", "padding": 2.5}, "augment.ops[0].padding", ["got 2.5", "accepted: an integer >= 0"]),
    ({"op": "shift", "width": 1.0}, "augment.ops[0].width", ["got 1.0", "accepted: a number >= 0 and < 1"]),
    ({"op": "shear", "degrees": 90}, "augment.ops[0].degrees", ["got 90", "< 90"]),
    ({"op": "zoom", "range": [1.2, 0.8]}, "augment.ops[0].range", ["got [1.2, 0.8]", "lo > hi", "0 < lo <= hi"]),
    ({"op": "zoom", "range": [0, 1]}, "augment.ops[0].range", ["got [0, 1]", "0 < lo <= hi"]),
    ({"op": "zoom", "range": [0.9]}, "augment.ops[0].range", ["got [0.9], 1 items", "a list of 2 numbers"]),
    ({"op": "contrast", "range": 1.0}, "augment.ops[0].range", ["got 1.0 (float)", "a list of 2 numbers"]),
    ({"op": "normalize", "std": [0.5, 0.0]}, "augment.ops[0].std", ["got [0.5, 0.0]", "numbers > 0"]),
    ({"op": "normalize", "mean": []}, "augment.ops[0].mean", ["got []", "one per channel"]),
    ({"op": "mixup", "alpha": 0}, "augment.ops[0].alpha", ["got 0", "accepted: a number > 0"]),
    ({"op": "brightness", "delta": float("nan")}, "augment.ops[0].delta", ["got nan", "a number >= 0"]),
    ({"op": "random_resized_crop", "scale": [0.5, 1.5]}, "augment.ops[0].scale",
     ["got [0.5, 1.5]", "0 < lo <= hi <= 1"]),
    ({"op": "random_resized_crop", "ratio": [2, 1]}, "augment.ops[0].ratio", ["got [2, 1], lo > hi", "0 < lo <= hi"]),
    ({"op": "color_jitter", "hue": 0.6}, "augment.ops[0].hue", ["got 0.6", "a number >= 0 and <= 0.5"]),
    ({"op": "color_jitter", "saturation": -0.1}, "augment.ops[0].saturation", ["got -0.1", "a number >= 0"]),
    ({"op": "color_jitter", "gamma": 1}, "augment.ops[0].gamma",
     ["unknown parameter of 'color_jitter'", "accepted: brightness, contrast, saturation, hue"]),
    ({"op": "randaugment", "magnitude": 31}, "augment.ops[0].magnitude", ["got 31", "an integer >= 0 and <= 30"]),
    ({"op": "randaugment", "num_ops": 1.5}, "augment.ops[0].num_ops", ["got 1.5", "an integer >= 0"]),
    ({"op": "trivialaugment", "magnitude": 9}, "augment.ops[0].magnitude",
     ["unknown parameter of 'trivialaugment'", "accepted: no parameters"]),
    ({"op": "random_erasing", "value": "noise"}, "augment.ops[0].value",
     ["got 'noise' (str)", "a number (the fill value) or 'random'"]),
    ({"op": "random_erasing", "scale": [0, 0.3]}, "augment.ops[0].scale", ["got [0, 0.3]", "0 < lo <= hi <= 1"]),
])
def test_validate_ops_names_the_field_path_the_value_and_what_is_accepted(item, path, fragments):
    problems = validate_ops([item])
    assert [p for p, _ in problems] == [path]
    for fragment in fragments:
        assert fragment in problems[0][1]


def test_random_erasing_value_takes_a_number_or_the_word_random_and_resolves_either():
    assert validate_ops([{"op": "random_erasing", "value": "random"}, {"op": "random_erasing", "value": -1.5}]) == []
    assert resolve_ops("none", [{"op": "random_erasing", "value": "random"}])[0]["value"] == "random"
    assert resolve_ops("none", [{"op": "random_erasing", "value": 1}])[0]["value"] == 1.0


@pytest.mark.parametrize("name", UNIT_RANGE_OPS)
def test_a_unit_range_op_after_a_normalize_is_refused_in_the_ops_or_after_the_preset(name):
    ((path, message),) = validate_ops([{"op": "normalize"}, {"op": "hflip"}, {"op": name}])
    assert path == "augment.ops[2].op" and f"got {name!r} after normalize (augment.ops[0] is a normalize)" in message
    assert f"accepted: {name} before any normalize" in message
    ((path, message),) = validate_ops([{"op": name}], preset="standard")
    assert path == "augment.ops[0].op" and "the preset 'standard' ends with normalize" in message
    with pytest.raises(AugmentError, match="augment.preset none and the preset's ops listed, normalize last"):
        resolve_ops("standard", [{"op": name}])
    assert validate_ops([{"op": name}, {"op": "normalize"}, {"op": "random_erasing"}], preset="light") == []


def test_policy_magnitudes_are_torchvisions_tables():
    # Values from torchvision.transforms.v2.RandAugment / TrivialAugmentWide._AUGMENTATION_SPACE (31 bins).
    randaugment = dict(zip(AUGMENT_POLICY_OPS, policy_magnitudes("randaugment", 32, 64)))
    assert randaugment["translate_x"][-1] == pytest.approx(150 / 331 * 64)
    assert randaugment["translate_y"][-1] == pytest.approx(150 / 331 * 32)
    assert randaugment["rotate"][9] == pytest.approx(9.0) and randaugment["shear_x"][30] == pytest.approx(0.3)
    assert randaugment["posterize"][:5] == [8, 8, 8, 8, 7] and randaugment["posterize"][-1] == 4
    assert randaugment["solarize"][0] == 1.0 and randaugment["solarize"][-1] == 0.0
    assert randaugment["identity"] == randaugment["equalize"] == [0.0] * MAGNITUDE_BINS
    trivial = dict(zip(AUGMENT_POLICY_OPS, policy_magnitudes("trivialaugment", 32, 64)))
    assert trivial["translate_x"][-1] == 32.0 and trivial["rotate"][-1] == 135.0
    assert trivial["posterize"][-1] == 2 and trivial["brightness"][-1] == pytest.approx(0.99)


@pytest.mark.parametrize("height, width, ratio, box", [
    (10, 10, [0.75, 4 / 3], (0, 0, 10, 10)),   # a square image fits the ratio range: all of it
    (10, 40, [0.75, 4 / 3], (0, 13, 10, 13)),  # too wide: full height, width 4/3 of it, centred
    (40, 10, [0.75, 4 / 3], (13, 0, 13, 10)),  # too tall: full width, height 4/3 of it, centred
])
def test_fallback_crop_is_torchvisions_centre_crop(height, width, ratio, box):
    assert fallback_crop(height, width, ratio) == box


def test_validate_ops_reports_every_bad_item_at_its_index_under_the_given_field():
    problems = validate_ops([{"op": "hflip"}, {"op": "flip"}, {"op": "rotate", "degrees": -1}], field="x.ops")
    assert [path for path, _ in problems] == ["x.ops[1].op", "x.ops[2].degrees"]


def test_validate_ops_refuses_a_non_list():
    ((path, message),) = validate_ops({"op": "hflip"})
    assert path == "augment.ops" and "accepted: a list" in message


def test_resolve_ops_fills_every_default_and_coerces_numbers():
    assert resolve_ops("none", [{"op": "rotate"}, {"op": "rotate", "degrees": 30},
                                {"op": "random_crop", "padding": 2.0}, {"op": "zoom", "range": [1, 2]}]) == [
        {"op": "rotate", "degrees": 15.0}, {"op": "rotate", "degrees": 30.0},
        {"op": "random_crop", "padding": 2}, {"op": "zoom", "range": [1.0, 2.0]}]
    resolved = resolve_ops("none", [{"op": "rotate", "degrees": 30}, {"op": "random_crop", "padding": 2.0}])
    assert type(resolved[0]["degrees"]) is float and type(resolved[1]["padding"]) is int


def test_resolve_ops_puts_the_preset_first_then_the_user_ops():
    resolved = resolve_ops("light", [{"op": "brightness", "delta": 0.1}])
    assert resolved == [{"op": "shift", "width": 0.1, "height": 0.1}, {"op": "rotate", "degrees": 10.0},
                        {"op": "brightness", "delta": 0.1}]


def test_resolve_ops_is_idempotent_and_does_not_share_lists_with_its_input():
    user = [{"op": "normalize", "mean": [0.1], "std": [0.2]}]
    once = resolve_ops("standard", user)
    assert resolve_ops("none", once) == once
    once[-1]["mean"].append(9.0)
    assert user[0]["mean"] == [0.1] and PRESETS["standard"][-1]["mean"] == [0.5]


def test_normalize_by_imagenet_resolves_to_imagenets_mean_and_std():
    imagenet_mean, imagenet_std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    assert resolve_ops("none", [{"op": "normalize", "mean": "imagenet"},
                                {"op": "normalize", "mean": "imagenet", "std": "imagenet"},
                                {"op": "normalize", "mean": "imagenet", "std": [1]},
                                {"op": "normalize", "mean": [0], "std": "imagenet"}]) == [
        {"op": "normalize", "mean": imagenet_mean, "std": imagenet_std},
        {"op": "normalize", "mean": imagenet_mean, "std": imagenet_std},
        {"op": "normalize", "mean": imagenet_mean, "std": [1.0]},
        {"op": "normalize", "mean": [0.0], "std": imagenet_std}]
    ((path, message),) = validate_ops([{"op": "normalize", "mean": "imagnet"}])
    assert path == "augment.ops[0].mean" and message.startswith("got 'imagnet' (str); accepted: a list of numbers")
    assert "or imagenet (ImageNet's RGB mean" in message


def test_resolve_ops_refuses_an_unknown_preset_naming_augment_preset():
    with pytest.raises(ValueError) as info:
        resolve_ops("standrad", [])
    assert info.value.problems == [("augment.preset", "got 'standrad' (did you mean 'standard'?); "
                                                      "accepted: none, light, standard")]
    assert "augment.preset" in str(info.value)


def test_resolve_ops_refuses_invalid_ops_with_their_problems():
    with pytest.raises(AugmentError) as info:
        resolve_ops("none", [{"op": "hflip", "p": 2}])
    assert [path for path, _ in info.value.problems] == ["augment.ops[0].p"]


# ---- every backend implements the catalogue


def backend_augment(backend: str):
    """A backend's augment module. Both frameworks may load in this process: conftest imports
    torch._dynamo before anything loads TensorFlow."""
    return load_backend_module(backend, "augment")


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_catalogue_op_has_a_kernel_of_its_kind_in_every_backend(backend):
    kernels = backend_augment(backend).KERNELS
    assert kernels.backend == backend and kernels.missing() == []
    assert {kind: set(names) for kind, names in kernels.names().items()} == {
        "matrix": set(MATRIX_OPS), "batch": set(BATCH_OPS),
        "pixel": {name for name in OPS if op_kind(name) == "pixel"}}  # no kernel for an op outside the catalogue


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_catalogue_op_without_a_kernel_is_the_same_clear_error_in_every_backend(backend, monkeypatch):
    # What adding an op to the catalogue but not to a backend does (tf used to fail with KeyError('mean')).
    monkeypatch.setitem(OPS, "solarize", {"threshold": (float, 0.5, {"ge": 0.0, "text": "a number >= 0"})})
    with pytest.raises(ValueError) as info:
        backend_augment(backend).Augmenter([{"op": "solarize"}], 10)
    implemented = ", ".join(name for name in OPS if name != "solarize")
    assert str(info.value) == (f"augment: op 'solarize' has no {backend} kernel; "
                               f"accepted by the {backend} backend: {implemented}")


def _numpy_rng(index: int):
    return np.random.default_rng(index)


def _tf_seed(index: int):
    return importlib.import_module("tensorflow").constant([index, 7])


# The random source each backend's cutmix_box takes.
BOX_RNG = {"torch": _numpy_rng, "tf": _tf_seed}


@pytest.mark.parametrize("backend", BACKENDS)
def test_cutmix_box_is_top_bottom_left_right_in_every_backend(backend):
    cutmix_box = backend_augment(backend).cutmix_box
    for index in range(20):
        # A wide image: a box of half the area is >= 14 columns wide but at most 4 rows high.
        top, bottom, left, right = (int(v) for v in cutmix_box(4, 40, 0.5, BOX_RNG[backend](index)))
        assert 0 <= top <= bottom <= 4 and 0 <= left <= right <= 40 and right - left >= 14, (index, top, bottom,
                                                                                               left, right)


def test_a_spec_with_a_unit_range_op_after_its_presets_normalize_is_refused_before_anything_runs():
    from raykit.spec import SpecError, load_spec
    with pytest.raises(SpecError, match=r"augment\.ops\[0\]\.op: got 'randaugment' after normalize \(the preset "
                                        r"'standard' ends with normalize\)"):
        load_spec(None, ["augment.preset=standard", "augment.ops=[{op: randaugment}]"])
    spec = load_spec(None, ["augment.ops=[{op: randaugment}, {op: normalize}, {op: random_erasing, value: random}]"])
    assert [op["op"] for op in spec.augment.ops] == ["randaugment", "normalize", "random_erasing"]



# ---- user ops: {op: "package.module:function", **params}


def test_a_user_op_is_valid_when_its_function_imports_and_takes_images_rng_and_its_params_or_just_its_params():
    assert validate_ops([{"op": "tests.backends.user_augment:tag", "label": "x"},
                         {"op": "tests.backends.user_augment:tag"},
                         {"op": "tests.backends.user_augment:tagger", "label": "x"}]) == []  # a factory
    resolved = resolve_ops("none", [{"op": "tests.backends.user_augment:tag", "label": ["a"]}])
    assert resolved == [{"op": "tests.backends.user_augment:tag", "label": ["a"]}]


@pytest.mark.parametrize("item, fragments", [
    ({"op": "tests.backends.no_such_module:tag"},
     ["got 'tests.backends.no_such_module:tag': cannot import module 'tests.backends.no_such_module'",
      "ModuleNotFoundError", "accepted: a function callable as function(images, rng, **params)"]),
    ({"op": "tests.backends.user_augment:missing"},
     ["module 'tests.backends.user_augment' has no callable 'missing'"]),
    ({"op": "tests.backends.user_augment:only_images"},
     ["with parameters [], which its signature (images) refuses", "function(images, rng, **params)"]),
    ({"op": "tests.backends.user_augment:tag", "colour": 1},
     ["with parameters ['colour'], which its signature (images, rng, label='user') refuses"]),
])
def test_a_user_op_that_cannot_be_imported_or_called_is_refused_naming_it_and_why(item, fragments):
    ((path, message),) = validate_ops([{"op": "hflip"}, item])
    assert path == "augment.ops[1].op"
    for fragment in fragments:
        assert fragment in message, message


def test_a_spec_with_a_user_op_that_cannot_be_imported_is_refused_before_anything_runs():
    from raykit.spec import SpecError, load_spec
    with pytest.raises(SpecError, match=r"augment\.ops\[0\]\.op: got 'nowhere:fn': cannot import module 'nowhere'"):
        load_spec(None, ["augment.ops=[{op: 'nowhere:fn'}]"])
