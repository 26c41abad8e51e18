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
CASES = {"any_value": 0, "unknown_key": 0, "override_text": 0, "locations": 0, "sizes": 0}


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(PATHS), ANY_VALUE, min_size=1, max_size=4))
def test_any_value_in_any_field_is_a_spec_or_a_spec_error_naming_it(overrides):
    CASES["any_value"] += 1
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
    CASES["unknown_key"] += 1
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
    CASES["override_text"] += 1
    try:
        load_spec(None, [text])
    except SpecError:
        pass


LOCATION_FIELDS = ["data.uri", "data.train_uri", "data.val_uri", "data.test_uri", "storage", "finetune.init_from"]
BAD_LOCATIONS = (st.text(max_size=30)
                 | st.builds(lambda scheme, rest: f"{scheme}://{rest}", st.from_regex(r"[A-Za-z0-9+_-]{1,8}",
                             fullmatch=True), st.text(max_size=12))
                 | st.builds(lambda name: f"/nonexistent-raykit/{name}.parquet", st.from_regex(r"[a-z]{1,8}",
                                                                                           fullmatch=True))
                 | st.sampled_from(["memory://runs", "s3://", "://x", "file:///nonexistent.npz", "digits"]))


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(LOCATION_FIELDS), BAD_LOCATIONS)
def test_bad_uris_and_missing_files_are_refused_naming_the_field(field, location):
    """Whatever a location field holds, loading ends in a spec or in a SpecError naming that field (or a
    data field it conflicts with), never in an error from pyarrow, fsspec or the OS."""
    CASES["locations"] += 1
    try:
        load_spec(None, {field: location})
    except SpecError as exc:
        assert field in exc.fields or set(exc.fields) & {"data.uri", "data.train_uri", "data.loader",
                                                          "data.val_fraction", "finetune.init_from"}


SIZE_FIELDS = [row[0] for row in field_reference() if isinstance(row[2], int) and not isinstance(row[2], bool)]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(SIZE_FIELDS), st.one_of(st.integers(-10**18, 0), st.integers(10**9, 10**18),
                                               st.just([]), st.just({})))
def test_negative_zero_absurd_and_empty_sizes_are_named(field, value):
    CASES["sizes"] += 1
    try:
        load_spec(None, {field: value})
    except SpecError as exc:
        assert exc.fields


def test_zz_case_counts():
    """How many cases the properties above tried (hypothesis may stop early when a space is exhausted).
    Printed with `pytest -s`; the README's reliability table quotes these numbers."""
    print("hypothesis cases tried:", CASES)
    assert CASES["any_value"] >= 300 and CASES["locations"] >= 200 and CASES["sizes"] >= 200


def test_bad_specs_and_bad_data_are_refused_before_ray_is_even_imported(tmp_path):
    (tmp_path / "folder" / "ant").mkdir(parents=True)  # a class folder without images
    script = f"""
import sys
import raykit
from raykit.data import DataError
from raykit.spec import SpecError
bad = [{{"train.epochs": -1}}, {{"data.uri": "/nonexistent-raykit.parquet"}}, {{"storage": "memory://runs"}},
       {{"data.uri": {str(tmp_path / "folder")!r}}}, {{"model.name": "no_such_module:factory"}}]
for overrides in bad:
    try:
        raykit.train(None, {{**overrides, "storage": overrides.get("storage", {str(tmp_path / "runs")!r})}})
    except (SpecError, DataError) as exc:
        print("refused:", type(exc).__name__, str(exc).splitlines()[-1])
    else:
        raise SystemExit(f"accepted: {{overrides}}")
assert "ray" not in sys.modules, "Ray was imported"
"""
    from tests.conftest import run_cli

    out = run_cli(["-c", script], timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("refused:") == 5
