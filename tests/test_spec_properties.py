"""Property-based checks of the spec loader: whatever a user writes, the answer is a valid spec or
raykit's own SpecError naming the field — never a traceback from deeper down."""

from __future__ import annotations

import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raykit.spec import SpecError, field_reference, load_spec

PATHS = [row[0] for row in field_reference()]
SECTIONS = sorted({path.split(".")[0] for path in PATHS})
ANY_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8)
CASES = {"tried": 0}


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(PATHS), ANY_VALUE, min_size=1, max_size=4))
def test_any_value_in_any_field_is_a_spec_or_a_spec_error_naming_it(overrides):
    CASES["tried"] += 1
    try:
        spec = load_spec(None, overrides)
    except SpecError as exc:
        assert exc.problems and all(isinstance(path, str) and path for path in exc.fields)
        named = set(exc.fields)
        assert any(path in named or any(p.startswith(path) or path.startswith(p) for p in named)
                   for path in overrides) or named & {"train.batch_size", "train.precision", "data.test_fraction",
                                                      "checkpoint.mode", "tune.mode", "checkpoint.export_template",
                                                      "model.pretrained", "finetune.unfreeze_every",
                                                      "finetune.backbone_lr_mult", "train.grad_accum_steps",
                                                      "model.name", "tune.searcher"}
    else:
        for path in PATHS:  # a spec that loads holds only finite numbers
            value = spec
            for part in path.split("."):
                value = getattr(value, part)
            if isinstance(value, float):
                assert math.isfinite(value)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["", *SECTIONS]), st.from_regex(r"[a-z_]{1,12}", fullmatch=True))
def test_unknown_keys_are_named(section, key):
    path = f"{section}.{key}" if section else key
    if path in PATHS or (not section and key in SECTIONS):
        return
    try:
        load_spec(None, {path: 1})
    except SpecError as exc:
        assert path in exc.fields or any(path.startswith(f + ".") for f in exc.fields)
    else:
        raise AssertionError(f"{path} was accepted")


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=40))
def test_any_override_text_is_parsed_or_refused_cleanly(text):
    try:
        load_spec(None, [text])
    except SpecError:
        pass
