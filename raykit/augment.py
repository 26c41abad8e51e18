"""The data-augmentation catalogue: which ops exist, their parameters, presets, validation, resolution.

This module is framework-neutral (stdlib only): the spec validates ``augment`` with it, and each
backend (``raykit.backends.torch.augment``, ``raykit.backends.tf.augment``) implements every op listed in
:data:`OPS` as a kernel in its tables; :mod:`raykit.augment_dispatch` applies the ops with those kernels.

An op is a mapping ``{op: NAME, **parameters}``; a run's ops are the preset's followed by the user's::

    from raykit.augment import resolve_ops
    resolve_ops("light", [{"op": "hflip"}])
    # [{'op': 'shift', 'width': 0.1, 'height': 0.1}, {'op': 'rotate', 'degrees': 10.0},
    #  {'op': 'hflip', 'p': 0.5}]

Semantics every backend follows (images are float, N samples, H x W pixels, C channels):

* Per-sample ops draw their random parameters independently for every sample of a batch.
* Geometric ops (``random_crop``, ``rotate``, ``shift``, ``shear``, ``zoom``) fill uncovered pixels with 0.
* ``normalize`` is deterministic and is the only op also applied at evaluation time.
* ``mixup`` / ``cutmix`` act on the whole batch and turn the labels into soft targets
  ``lam * onehot(y) + (1 - lam) * onehot(y[perm])``.
* ``random_resized_crop``, ``color_jitter``, ``randaugment``, ``trivialaugment`` and ``random_erasing`` follow
  torchvision's transforms of those names (v2, float images) per sample; where they differ it is said in
  :data:`OP_HELP` and the backends' docstrings. ``color_jitter``, ``randaugment`` and ``trivialaugment`` clamp
  to [0, 1] and so must come before any ``normalize``; ``random_erasing`` belongs after it.
* A user op ``{op: "package.module:function", **params}`` is called as ``function(images, rng, **params)``
  on every training batch, ``rng`` being the op's random source (see :func:`user_op_problems`); it is
  validated (imported, its signature checked) with the spec, before anything runs.
"""

from __future__ import annotations

import copy
import difflib
import inspect
import math
import re
from typing import Any, Callable, Mapping

from raykit.user_code import import_factory

# A user op's name: "package.module:function" (the spec's USER_FACTORY pattern; raykit.spec imports this module).
USER_OP = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")

# The magnitude scale of randaugment and trivialaugment: torchvision's num_magnitude_bins default.
MAGNITUDE_BINS = 31

# op -> parameter -> (python type, default, rules). ``list`` parameters hold floats. The rules are the
# bounds each number must meet (for lists: each item), "length"/"min_length" of a list, "ordered" when a
# 2-list must have lo <= hi, "words": the strings also accepted besides a number or list, and "text": what is
# accepted, in words, for error messages and docs.
OPS: dict[str, dict[str, tuple[type, Any, dict]]] = {
    "random_crop": {"padding": (int, 4, {"ge": 0, "text": "an integer >= 0"})},
    "hflip": {"p": (float, 0.5, {"ge": 0.0, "le": 1.0, "text": "a number >= 0 and <= 1"})},
    "vflip": {"p": (float, 0.5, {"ge": 0.0, "le": 1.0, "text": "a number >= 0 and <= 1"})},
    "rotate": {"degrees": (float, 15.0, {"ge": 0.0, "text": "a number >= 0"})},
    "shift": {"width": (float, 0.1, {"ge": 0.0, "lt": 1.0, "text": "a number >= 0 and < 1"}),
              "height": (float, 0.1, {"ge": 0.0, "lt": 1.0, "text": "a number >= 0 and < 1"})},
    # tan(90 degrees) is infinite: a shear must stay below a right angle.
    "shear": {"degrees": (float, 10.0, {"ge": 0.0, "lt": 90.0, "text": "a number >= 0 and < 90"})},
    "zoom": {"range": (list, [0.9, 1.1], {"length": 2, "gt": 0.0, "ordered": True,
                                          "text": "a list of 2 numbers [lo, hi] with 0 < lo <= hi"})},
    "brightness": {"delta": (float, 0.2, {"ge": 0.0, "text": "a number >= 0"})},
    "contrast": {"range": (list, [0.8, 1.2], {"length": 2, "ge": 0.0, "ordered": True,
                                              "text": "a list of 2 numbers [lo, hi] with 0 <= lo <= hi"})},
    "normalize": {"mean": (list, [0.5], {"min_length": 1, "words": ["imagenet"],
                                         "text": "a list of numbers: one (for every channel) or one per channel; "
                                                 "or imagenet (ImageNet's RGB mean, and its std too unless std "
                                                 "is given)"}),
                  "std": (list, [0.5], {"min_length": 1, "gt": 0.0, "words": ["imagenet"],
                                        "text": "a list of numbers > 0: one (for every channel) or one per "
                                                "channel; or imagenet (ImageNet's RGB std)"})},
    "mixup": {"alpha": (float, 0.2, {"gt": 0.0, "text": "a number > 0"}),
              "p": (float, 1.0, {"ge": 0.0, "le": 1.0, "text": "a number >= 0 and <= 1"})},
    "cutmix": {"alpha": (float, 1.0, {"gt": 0.0, "text": "a number > 0"}),
               "p": (float, 1.0, {"ge": 0.0, "le": 1.0, "text": "a number >= 0 and <= 1"})},
    "random_resized_crop": {
        "scale": (list, [0.08, 1.0], {"length": 2, "gt": 0.0, "le": 1.0, "ordered": True,
                                      "text": "a list of 2 numbers [lo, hi] with 0 < lo <= hi <= 1"}),
        "ratio": (list, [0.75, 4 / 3], {"length": 2, "gt": 0.0, "ordered": True,
                                        "text": "a list of 2 numbers [lo, hi] with 0 < lo <= hi"})},
    "color_jitter": {"brightness": (float, 0.4, {"ge": 0.0, "text": "a number >= 0"}),
                     "contrast": (float, 0.4, {"ge": 0.0, "text": "a number >= 0"}),
                     "saturation": (float, 0.4, {"ge": 0.0, "text": "a number >= 0"}),
                     "hue": (float, 0.0, {"ge": 0.0, "le": 0.5, "text": "a number >= 0 and <= 0.5"})},
    "randaugment": {"num_ops": (int, 2, {"ge": 0, "le": 16, "text": "an integer >= 0 and <= 16"}),
                    "magnitude": (int, 9, {"ge": 0, "le": MAGNITUDE_BINS - 1,
                                           "text": f"an integer >= 0 and <= {MAGNITUDE_BINS - 1}"})},
    "trivialaugment": {},
    "random_erasing": {
        "p": (float, 0.5, {"ge": 0.0, "le": 1.0, "text": "a number >= 0 and <= 1"}),
        "scale": (list, [0.02, 0.33], {"length": 2, "gt": 0.0, "le": 1.0, "ordered": True,
                                       "text": "a list of 2 numbers [lo, hi] with 0 < lo <= hi <= 1"}),
        "ratio": (list, [0.3, 3.3], {"length": 2, "gt": 0.0, "ordered": True,
                                     "text": "a list of 2 numbers [lo, hi] with 0 < lo <= hi"}),
        "value": (float, 0.0, {"words": ["random"], "text": "a number (the fill value) or 'random' (per-pixel "
                                                             "N(0, 1) noise)"})},
}

OP_HELP: dict[str, str] = {
    "random_crop": "Zero-pad every side by `padding` px, then crop back to the original size at a random "
                   "offset per sample.",
    "hflip": "Flip left-right with probability `p` per sample.",
    "vflip": "Flip top-bottom with probability `p` per sample.",
    "rotate": "Rotate by an angle uniform in [-degrees, degrees] per sample (positive = counterclockwise).",
    "shift": "Translate by uniform [-width*W, width*W] px horizontally and [-height*H, height*H] px "
             "vertically per sample.",
    "shear": "Horizontal shear by an angle uniform in [-degrees, degrees] per sample.",
    "zoom": "Scale by a factor uniform in `range` per sample (> 1 zooms in).",
    "brightness": "Add a value uniform in [-delta, delta] per sample.",
    "contrast": "x -> (x - mean) * f + mean with the per-image mean and f uniform in `range` per sample.",
    "normalize": "x -> (x - mean) / std per channel; deterministic, also applied at evaluation. mean: imagenet "
                 "(with std left out or imagenet) normalizes by ImageNet's statistics, as pretrained models "
                 "from torchvision and timm expect.",
    "mixup": "With probability `p` per batch: lam ~ Beta(alpha, alpha), mix every sample with a permuted "
             "partner; soft targets.",
    "cutmix": "With probability `p` per batch: paste a box of area (1 - lam) from a permuted partner, "
              "lam ~ Beta(alpha, alpha) corrected to the pasted area; soft targets.",
    "random_resized_crop": "torchvision's RandomResizedCrop at the input size, per sample: a box of area fraction "
                           "uniform in `scale` and log-uniform aspect ratio in `ratio` (10 tries, then a centre "
                           "crop), resized bilinearly.",
    "color_jitter": "torchvision's ColorJitter per sample, in a random order per sample: brightness, contrast, "
                    "saturation factors uniform in [max(0, 1 - v), 1 + v], hue shift uniform in [-hue, hue] "
                    "(RGB only); pixels in [0, 1], before normalize.",
    "randaugment": "torchvision's RandAugment per sample: `num_ops` ops drawn from the 14 of AUGMENT_POLICY_OPS at "
                   f"bin `magnitude` of {MAGNITUDE_BINS}, random sign; pixels in [0, 1], before normalize.",
    "trivialaugment": "torchvision's TrivialAugmentWide per sample: 1 op of the 14 of AUGMENT_POLICY_OPS at a "
                      f"uniform bin of {MAGNITUDE_BINS}, random sign; pixels in [0, 1], before normalize.",
    "random_erasing": "torchvision's RandomErasing per sample with probability `p`: a box of area fraction in "
                      "`scale`, aspect in `ratio` (10 tries, else unchanged) set to `value` or N(0, 1) noise; "
                      "place it after normalize, as torchvision does.",
}

# Ops applied at evaluation time too; every other op is training-only.
DETERMINISTIC_OPS = ("normalize",)
# Ops that act on the whole batch and make soft targets.
BATCH_OPS = ("mixup", "cutmix")
# Ops expressed as one affine map per sample: consecutive ones compose and the images are resampled once.
MATRIX_OPS = ("rotate", "shift", "shear", "zoom")
# Ops that need pixels in [0, 1] (they clamp to it, as torchvision's do): refused after a normalize.
UNIT_RANGE_OPS = ("color_jitter", "randaugment", "trivialaugment")

# The colour kernels' constants, torchvision's: luma weights (rgb_to_grayscale), and which of (v, p, q, t) is
# r, g, b in each sector floor(6 h) of the hue circle (HSV -> RGB).
LUMA = (0.2989, 0.587, 0.114)
HSV_SECTORS = ((0, 2, 1, 1, 3, 0), (3, 0, 0, 2, 1, 1), (1, 1, 3, 0, 0, 2))

# random_resized_crop and random_erasing try this many boxes per sample before their fallback (torchvision's).
BOX_TRIES = 10


def fallback_crop(height: int, width: int, ratio: list[float]) -> tuple[int, int, int, int]:
    """random_resized_crop's box ``(top, left, height, width)`` when no try fits: torchvision's centre crop,
    the whole image clipped to the aspect ratio range."""
    aspect = width / height
    if aspect < min(ratio):
        crop_w, crop_h = width, int(round(width / min(ratio)))
    elif aspect > max(ratio):
        crop_w, crop_h = int(round(height * max(ratio))), height
    else:
        crop_w, crop_h = width, height
    return (height - crop_h) // 2, (width - crop_w) // 2, crop_h, crop_w


# The ops randaugment and trivialaugment choose from, in torchvision's order, each uniformly:
# name -> (magnitude of bin 0, of the last bin, signed). Translations are in pixels: (fraction of the width or
# height, or absolute); posterize keeps that many bits; solarize inverts pixels >= its threshold.
AUGMENT_POLICY_OPS = ("identity", "shear_x", "shear_y", "translate_x", "translate_y", "rotate", "brightness",
                      "color", "contrast", "sharpness", "posterize", "solarize", "autocontrast", "equalize")
_POLICY_RANGES = {
    "randaugment": {"shear_x": (0.0, 0.3), "shear_y": (0.0, 0.3), "translate_x": (0.0, 150 / 331),
                    "translate_y": (0.0, 150 / 331), "rotate": (0.0, 30.0), "brightness": (0.0, 0.9),
                    "color": (0.0, 0.9), "contrast": (0.0, 0.9), "sharpness": (0.0, 0.9), "posterize": (8, 4),
                    "solarize": (1.0, 0.0)},
    "trivialaugment": {"shear_x": (0.0, 0.99), "shear_y": (0.0, 0.99), "translate_x": (0.0, 32.0),
                       "translate_y": (0.0, 32.0), "rotate": (0.0, 135.0), "brightness": (0.0, 0.99),
                       "color": (0.0, 0.99), "contrast": (0.0, 0.99), "sharpness": (0.0, 0.99),
                       "posterize": (8, 2), "solarize": (1.0, 0.0)},
}
# Ops whose magnitude gets a random sign (torchvision's ``signed``).
SIGNED_POLICY_OPS = ("shear_x", "shear_y", "translate_x", "translate_y", "rotate", "brightness", "color",
                     "contrast", "sharpness")


def policy_magnitudes(policy: str, height: int, width: int) -> list[list[float]]:
    """The magnitude of every op of :data:`AUGMENT_POLICY_OPS` at each of the :data:`MAGNITUDE_BINS` bins of
    ``policy`` (``randaugment`` or ``trivialaugment``) for H x W images: torchvision's tables, rows by op.

    Shears are tan(angle); randaugment's translations scale with the image (150/331 of its side at the last
    bin), trivialaugment's are absolute pixels; ops without a magnitude have 0 in every bin.
    """
    last = MAGNITUDE_BINS - 1
    rows = []
    for name in AUGMENT_POLICY_OPS:
        low, high = _POLICY_RANGES[policy].get(name, (0.0, 0.0))
        if name == "posterize":  # 8 bits at bin 0 down to `high` bits, rounded
            row = [float(round(8 - k / (last / (low - high)))) for k in range(MAGNITUDE_BINS)]
        else:
            row = [low + (high - low) * k / last for k in range(MAGNITUDE_BINS)]
        if policy == "randaugment" and name in ("translate_x", "translate_y"):
            side = width if name == "translate_x" else height
            row = [value * side for value in row]
        rows.append(row)
    return rows

# Named statistics for normalize's mean and std: ImageNet's per-channel RGB mean and std (torchvision's).
NORMALIZE_STATS: dict[str, dict[str, list[float]]] = {
    "imagenet": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
}

PRESETS: dict[str, list[dict]] = {
    "none": [],
    # Digits: small shifts and rotations only; a flipped 2 or 5 is not a digit any more.
    "light": [{"op": "shift", "width": 0.1, "height": 0.1}, {"op": "rotate", "degrees": 10}],
    # torchvision's classic CIFAR recipe.
    "standard": [{"op": "random_crop", "padding": 4}, {"op": "hflip", "p": 0.5},
                 {"op": "normalize", "mean": [0.5], "std": [0.5]}],
}


class AugmentError(ValueError):
    """Invalid augmentation ops. ``problems`` holds ``(field_path, message)`` pairs like SpecError's."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        super().__init__("invalid augmentation:\n" + "\n".join(f"  {p}: {m}" for p, m in problems))


def validate_ops(ops: Any, field: str = "augment.ops", preset: str = "none") -> list[tuple[str, str]]:
    """Every problem in a list of ops (run after ``preset``'s), as ``(field path, message)`` pairs; empty
    when all are valid.

    Paths look like ``augment.ops[2].degrees``; messages say ``got <value>; accepted: <what>``.
    """
    if not isinstance(ops, (list, tuple)):
        return [(field, f"got {ops!r} ({type(ops).__name__}); accepted: a list of {{op: NAME, ...params}}")]
    problems: list[tuple[str, str]] = []
    for index, item in enumerate(ops):
        problems += _validate_op(item, f"{field}[{index}]")
    return problems or _order_problems(ops, field, preset)


def _order_problems(ops: list, field: str, preset: str) -> list[tuple[str, str]]:
    """A [0, 1]-pixel op (:data:`UNIT_RANGE_OPS`) after a normalize, which would clamp normalized pixels."""
    normalized = f"the preset {preset!r} ends with normalize" if any(
        op["op"] == "normalize" for op in PRESETS.get(preset, [])) else ""
    problems = []
    for index, item in enumerate(ops):
        if item["op"] == "normalize":
            normalized = f"augment.ops[{index}] is a normalize"
        elif item["op"] in UNIT_RANGE_OPS and normalized:
            problems.append((f"{field}[{index}].op", f"got {item['op']!r} after normalize ({normalized}); accepted: "
                                                     f"{item['op']} before any normalize, as it works on pixels in "
                                                     "[0, 1] (with a preset that normalizes: augment.preset none "
                                                     "and the preset's ops listed, normalize last)"))
    return problems


def _validate_op(item: Any, path: str) -> list[tuple[str, str]]:
    if not isinstance(item, Mapping):
        return [(path, f"got {item!r} ({type(item).__name__}); accepted: a mapping {{op: NAME, ...params}} "
                       f"with NAME one of {', '.join(OPS)}")]
    if "op" not in item:
        return [(f"{path}.op", f"missing in {dict(item)!r}; accepted: one of {', '.join(OPS)}")]
    name = item["op"]
    if is_user_op(name):
        return user_op_problems(item, path)
    if not isinstance(name, str) or name not in OPS:
        return [(f"{path}.op", f"got {name!r}{_did_you_mean(name, OPS)}; accepted: one of {', '.join(OPS)}, "
                               "or a user op 'package.module:function'")]
    params = OPS[name]
    problems = []
    for key, value in item.items():
        if key == "op":
            continue
        if key not in params:
            accepted = ", ".join(params) or "no parameters"
            problems.append((f"{path}.{key}", f"got {key}={value!r}, an unknown parameter of {name!r}"
                                              f"{_did_you_mean(key, params)}; accepted: {accepted}"))
            continue
        message = check_param(name, key, value)
        if message:
            problems.append((f"{path}.{key}", message))
    return problems


def is_user_op(name: Any) -> bool:
    """Whether op ``name`` is a user op, ``"package.module:function"`` (see :func:`user_op_problems`)."""
    return isinstance(name, str) and USER_OP.match(name) is not None


def import_user_op(name: str) -> Callable:
    """The function of user op ``name`` (``"package.module:function"``), imported.

    Raises:
        ImportError: the module cannot be imported or has no such callable, naming both.
    """
    return import_factory(name)


USER_OP_FORMS = ("a function callable as function(images, rng, **params), or a factory function(**params) "
                 "returning a transform (torch: a callable on the batch, e.g. a torchvision.transforms.v2 "
                 "pipeline; tf: a Keras layer)")


def user_op_form(function: Callable, params: Mapping) -> str:
    """``"function"`` when ``function(images, rng, **params)`` binds, ``"factory"`` when ``function(**params)``
    does (a function taking both is a function).

    Raises:
        TypeError: neither binds.
    """
    signature = inspect.signature(function)
    try:
        signature.bind(None, None, **params)
        return "function"
    except TypeError:
        signature.bind(**params)
        return "factory"


def user_op_problems(item: Mapping, path: str) -> list[tuple[str, str]]:
    """Why a user op ``{op: "package.module:function", **params}`` cannot run: its function cannot be imported,
    or called in either form of :data:`USER_OP_FORMS`; empty when it can.

    A function is called on every training batch as ``function(images, rng, **params)``: ``images`` is the
    batch as it reaches the op (torch: float NCHW on the device; tf: float NHWC), ``rng`` the op's random
    source (torch: a ``torch.Generator`` on the device; tf: a stateless seed, 2 int32); it returns the images.
    A factory is called once, ``function(**params)``, and its transform on every batch with its randomness
    seeded from ``rng`` (torch: the global RNG, forked; tf: the layer's seed generators). Either way a resumed
    run replays the same draws.
    """
    try:
        function = import_user_op(item["op"])
    except ImportError as exc:
        return [(f"{path}.op", f"got {item['op']!r}: {exc}; accepted: {USER_OP_FORMS}")]
    params = {key: value for key, value in item.items() if key != "op"}
    try:
        user_op_form(function, params)
    except TypeError as exc:
        return [(f"{path}.op", f"got {item['op']!r} with parameters {sorted(params)}, which its signature "
                               f"{inspect.signature(function)} refuses ({exc}); accepted: {USER_OP_FORMS}")]
    except ValueError:  # a builtin without a signature: let the first batch tell
        pass
    return []


def check_param(op: str, param: str, value: Any) -> str:
    """Why ``value`` is not a valid ``param`` of ``op`` (``got ...; accepted: ...``), or '' when it is."""
    ptype, _, rules = OPS[op][param]
    bad = f"got {value!r} ({type(value).__name__}); accepted: {rules['text']}"
    if isinstance(value, str) and value in rules.get("words", ()):
        return ""
    if ptype is list:
        if not isinstance(value, (list, tuple)) or not all(_is_number(v) for v in value):
            return bad
        if "length" in rules and len(value) != rules["length"]:
            return f"got {list(value)!r}, {len(value)} items; accepted: {rules['text']}"
        if len(value) < rules.get("min_length", 0):
            return f"got {list(value)!r}; accepted: {rules['text']}"
        if rules.get("ordered") and value[0] > value[1]:
            return f"got {list(value)!r}, lo > hi; accepted: {rules['text']}"
        items = value
    elif ptype is int:
        if not (_is_number(value) and float(value).is_integer()):
            return bad
        items = [value]
    else:
        if not _is_number(value):
            return bad
        items = [value]
    if not all(math.isfinite(v) and _in_bounds(v, rules) for v in items):
        shown = list(value) if ptype is list else value
        return f"got {shown!r}; accepted: {rules['text']}"
    return ""


def resolve_ops(preset: str, ops: list) -> list[dict]:
    """The preset's ops followed by ``ops``, each a full dict with every parameter (defaults filled in).

    Numbers are coerced to the parameter's type (``{"op": "rotate", "degrees": 10}`` gives
    ``{"op": "rotate", "degrees": 10.0}``). Resolving already resolved ops returns equal ops.

    Raises:
        AugmentError (a ValueError): an unknown ``augment.preset`` or invalid ``augment.ops``.
    """
    if not isinstance(preset, str) or preset not in PRESETS:
        raise AugmentError([("augment.preset", f"got {preset!r}{_did_you_mean(preset, PRESETS)}; "
                                               f"accepted: {', '.join(PRESETS)}")])
    problems = validate_ops(ops, preset=preset)
    if problems:
        raise AugmentError(problems)
    return [_fill(item) for item in [*PRESETS[preset], *ops]]


def channel_problems(preset: str, ops: list, channels: int) -> list[tuple[str, str]]:
    """What the recipe cannot do to images of ``channels`` channels, by field (checked against the data
    before Ray starts; the backends' ops would refuse it on every worker): normalize's mean and std need
    one value or one per channel, a hue jitter needs RGB."""
    problems = []
    for index, item in enumerate(resolve_ops(preset, ops)):
        user = index - len(PRESETS[preset])
        where = f"augment.ops[{user}]" if user >= 0 else f"augment.preset {preset!r}'s {item['op']}"
        if item["op"] == "normalize":
            for name in ("mean", "std"):
                if len(item[name]) not in (1, channels):
                    problems.append((f"{where}.{name}", f"got {item[name]} ({len(item[name])} values) for images with "
                                                        f"{channels} channel(s); accepted: 1 value or {channels}"))
        if item["op"] == "color_jitter" and item["hue"] > 0 and channels != 3:
            problems.append((f"{where}.hue", f"got {item['hue']} for images with {channels} channel(s); accepted: "
                                             "0 unless the images are RGB (3 channels)"))
    return problems


def _fill(item: Mapping) -> dict:
    name = item["op"]
    if is_user_op(name):  # its parameters are the function's: passed as they are
        return copy.deepcopy(dict(item))
    resolved: dict[str, Any] = {"op": name}
    for key, (ptype, default, _) in OPS[name].items():
        value = item.get(key, default)
        if name == "normalize":
            value = _named_statistic(item, key, value)
        if ptype is list:
            resolved[key] = [float(v) for v in value]
        elif isinstance(value, str):  # one of the param's "words"
            resolved[key] = value
        else:
            resolved[key] = ptype(value)
    return resolved


def _named_statistic(item: Mapping, key: str, value: Any) -> Any:
    """normalize's ``mean``/``std`` as numbers: a name of :data:`NORMALIZE_STATS` is looked up, and a ``std``
    left out beside a named ``mean`` is that name's std."""
    mean = item.get("mean")
    if key == "std" and key not in item and isinstance(mean, str) and mean in NORMALIZE_STATS:  # lists: no name
        value = item["mean"]
    return NORMALIZE_STATS[value][key] if isinstance(value, str) and value in NORMALIZE_STATS else value


def _is_number(value: Any) -> bool:
    """int or float, but not bool: ``true`` in YAML is a mistake, not the number 1."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


_BOUNDS = {"gt": lambda v, b: v > b, "ge": lambda v, b: v >= b,
           "lt": lambda v, b: v < b, "le": lambda v, b: v <= b}


def _in_bounds(value: float, rules: Mapping) -> bool:
    return all(test(value, rules[key]) for key, test in _BOUNDS.items() if key in rules)


def _did_you_mean(value: Any, choices: Mapping | tuple) -> str:
    if not isinstance(value, str):
        return ""
    close = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
