"""The run spec's JSON Schema (``raykit spec --json-schema``), without Ray: the shipped configs pass it, bad
ones fail it, and for every field it accepts what the validator accepts."""

from __future__ import annotations

import math
import typing
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from jsonschema import Draft7Validator

from raykit.augment import OPS, is_user_op, validate_ops
from raykit.spec import SpecError, field_reference, load_spec, yaml_load
from raykit.spec.fields import BOUNDS, SWITCH_WORDS, choices_of, is_optional, strip_optional
from raykit.spec.json_schema import json_schema, json_schema_text
from raykit.spec.loading import field_at, field_problem
from tests.conftest import run_cli

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "jobs" / "configs").glob("*.yaml"))
SHIPPED = REPO / "jobs" / "configs" / "raykit.schema.json"
VALIDATOR = Draft7Validator(json_schema())
LEAVES = [row[0] for row in field_reference()]


def nested(path: str, value) -> dict:
    """``{"optim": {"lr": value}}`` for ``optim.lr``: a config that sets one field."""
    for part in reversed(path.split(".")):
        value = {part: value}
    return value


def test_the_schema_is_a_valid_draft_7_schema():
    Draft7Validator.check_schema(json_schema())


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_validates_and_names_the_schema_for_editors(config):
    text = config.read_text()
    assert text.splitlines()[0] == "# yaml-language-server: $schema=raykit.schema.json"
    assert [e.message for e in VALIDATOR.iter_errors(yaml_load(text) or {})] == []


@pytest.mark.parametrize("config, wrong", [
    ({"train": {"epochs": "many"}}, "wrong type"),
    ({"optim": {"lr": 20.0}}, "out of range"),
    ({"optim": {"lrr": 0.1}}, "unknown key"),
    ({"trian": {"epochs": 3}}, "unknown section"),
    ({"train": {"precision": "fp8"}}, "not a choice"),
    ({"augment": {"ops": [{"op": "rotate", "degres": 3}]}}, "unknown op parameter"),
    ({"augment": {"ops": [{"op": "hflip", "p": 1.5}]}}, "op parameter out of range"),
])
def test_a_config_with_a_mistake_is_rejected_by_the_schema_and_by_load_spec(config, wrong):
    assert not VALIDATOR.is_valid(config), wrong
    with pytest.raises(SpecError):
        load_spec(config)


def test_every_field_is_typed_with_its_default_and_help():
    for path in LEAVES:
        node = json_schema()
        for part in path.split("."):
            assert node.get("additionalProperties") is False, path
            node = node["properties"][part]
        assert ("type" in node or "enum" in node or "anyOf" in node) and node["description"], path
        assert "default" in node, path


def number_type(path: str) -> tuple:
    """(int or float, whether the field is a list of them) of a numeric field."""
    ftype = field_at(path)[0]
    ftype = strip_optional(ftype) if is_optional(ftype) else ftype
    if typing.get_origin(ftype) is list:
        return typing.get_args(ftype)[0], True
    return ftype, False


def boundary_values(path: str) -> list:
    """Numbers on, just inside and just outside each bound of the field (for lists: as one item)."""
    meta, (_, is_list) = field_at(path)[1], number_type(path)
    numbers = []
    for key in (key for key, _, _ in BOUNDS if key in meta):
        bound = meta[key]
        numbers += [bound, bound - 1, bound + 1, math.nextafter(bound, -math.inf), math.nextafter(bound, math.inf)]
    return [[n] for n in numbers] if is_list else numbers


# The nearest value outside each bound, for integers and for floats.
OUTSIDE = {"ge": (lambda b: b - 1, lambda b: math.nextafter(b, -math.inf)), "gt": (lambda b: b, lambda b: b),
           "le": (lambda b: b + 1, lambda b: math.nextafter(b, math.inf)), "lt": (lambda b: b, lambda b: b)}


def outside_values(path: str) -> list:
    """One value just outside each bound of the field: an integer's next integer, a float's next float."""
    meta, (number, is_list) = field_at(path)[1], number_type(path)
    values = [OUTSIDE[key][number is not int](meta[key]) for key in OUTSIDE if key in meta]
    return [[v] for v in values] if is_list else values


def schema_accepts(path: str, value) -> bool:
    return VALIDATOR.is_valid(nested(path, value))


def checks_accept(path: str, value) -> bool:
    """Whether the validator's checks of the one field accept ``value``: the field metadata's, and for
    ``augment.ops`` the op catalogue's (:func:`raykit.augment.validate_ops`), less the one rule the schema
    leaves out: a range's lo <= hi."""
    if field_problem(path, value):
        return False
    problems = validate_ops(value) if path == "augment.ops" else []
    return all("lo > hi" in message for _, message in problems)


@pytest.mark.parametrize("path", [p for p in LEAVES if outside_values(p)])
def test_a_value_just_outside_a_bound_is_rejected_by_both_and_the_bound_itself_agrees(path):
    for value in outside_values(path):
        assert not schema_accepts(path, value), (path, value)
        with pytest.raises(SpecError) as caught:
            load_spec(None, {path: value})
        assert path in caught.value.fields, (path, value)
    for value in boundary_values(path):
        assert schema_accepts(path, value) == checks_accept(path, value), (path, value)


@pytest.mark.parametrize("path", [p for p in LEAVES if choices_of(field_at(p)[1]) is not None])
def test_the_enum_is_what_the_field_accepts(path):
    choices = choices_of(field_at(path)[1])
    for value in [*choices, *SWITCH_WORDS, "not-a-choice", 1, None]:
        assert schema_accepts(path, value) == checks_accept(path, value), (path, value)


EDGE_VALUES = ["", " ", "x", None, True, False, 0, 1, -1, 2.5, [], [1], [0], [""], {}, {"a": 1}, {1: "a"}]


@pytest.mark.parametrize("path", LEAVES)
def test_edge_values_get_the_same_verdict_from_the_schema_and_the_field_checks(path):
    for value in EDGE_VALUES:
        assert schema_accepts(path, value) == checks_accept(path, value), (path, value)


# Anything a YAML file may hold, except what a JSON Schema cannot speak of (see raykit.spec.json_schema):
# NaN and infinity, numbers written as text, integer-valued floats beyond 2**53.
NUMBERS = (st.integers(-10**12, 10**12) | st.floats(-2.0**52, 2.0**52, allow_nan=False)
           | st.sampled_from([0, 1, -1, 0.5, 1.0, 2, 1e-9]))
TEXT = st.text(max_size=12).filter(lambda t: not _looks_like_a_number(t)) | st.sampled_from(
    ["", " ", "pkg.mod:build", "pkg:", "on", "off", "auto", "cnn"])
ANY_VALUE = st.recursive(st.none() | st.booleans() | NUMBERS | TEXT,
                         lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                                     max_size=3), max_leaves=6)


def _looks_like_a_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_for_every_field_the_schema_accepts_exactly_what_the_field_checks_accept(data):
    path = data.draw(st.sampled_from(LEAVES))
    value = data.draw(ANY_VALUE | st.sampled_from(boundary_values(path) or [0]), label="value")
    assert schema_accepts(path, value) == checks_accept(path, value), (path, value, field_problem(path, value))


PARAMS = sorted({param for params in OPS.values() for param in params})
PARAM_VALUE = NUMBERS | st.lists(NUMBERS, max_size=3)
OP_ITEM = (st.builds(lambda op, rest: {"op": op, **rest}, st.sampled_from([*OPS, "flip"]),
                     st.dictionaries(st.sampled_from(PARAMS), PARAM_VALUE, max_size=2))
           | st.dictionaries(st.sampled_from(["op", *PARAMS, "size"]), PARAM_VALUE | st.booleans() | TEXT, max_size=3)
           | ANY_VALUE)


@settings(max_examples=400, deadline=None)
@given(OP_ITEM)
def test_an_augment_op_passes_the_schema_exactly_when_the_validator_takes_it(item):
    # A user op's name of the right form passes the schema whether or not it imports: only the validator
    # imports it (test_a_user_op_passes_the_schema_by_the_form_of_its_name).
    assume(not (isinstance(item, dict) and is_user_op(item.get("op"))))
    assert schema_accepts("augment.ops", [item]) == checks_accept("augment.ops", [item]), item


def test_a_user_op_passes_the_schema_by_the_form_of_its_name():
    user_op = {"op": "tests.backends.user_augment:random_offsets", "amount": 0.2}
    assert schema_accepts("augment.ops", [user_op]) and checks_accept("augment.ops", [user_op])
    for name in ("tests.backends.user_augment", "user augment:jitter", ":jitter", "pkg.mod:"):
        assert not schema_accepts("augment.ops", [{"op": name}]), name
        assert not checks_accept("augment.ops", [{"op": name}]), name


@pytest.mark.parametrize("op", OPS)
def test_every_op_parameter_gets_the_same_verdict_from_both(op):
    for param, (_, default, rules) in OPS[op].items():
        bounds = [rules[key] + step for key in ("ge", "gt", "le", "lt") if key in rules for step in (-0.5, 0, 0.5)]
        values = [default, True, "x", None, [], [0.5], [0.5, 1.0], [1.0, 0.5], [0.5, 1.0, 2.0], [-1.0, 1.0], 3,
                  3.0, 2.5, -1, *bounds, *([b, b + 1] for b in bounds)]
        for value in values:
            item = [{"op": op, param: value}]
            assert schema_accepts("augment.ops", item) == checks_accept("augment.ops", item), (op, param, value)
    assert not schema_accepts("augment.ops", [{"op": op, "size": 1}]) and validate_ops([{"op": op, "size": 1}])


def test_shipped_schema_is_what_raykit_spec_json_schema_prints():
    out = run_cli(["-m", "raykit.cli", "spec", "--json-schema"])
    assert out.returncode == 0, out.stderr
    assert out.stdout == json_schema_text()
    assert SHIPPED.read_text() == out.stdout, (
        "jobs/configs/raykit.schema.json is stale: raykit spec --json-schema jobs/configs/raykit.schema.json")
