"""The run spec as a JSON Schema (draft-07), generated from the same field metadata the validator reads
(types, ``choices``, bounds, ``nonempty``, defaults, help) and from the augmentation catalogue, so that
editors complete and check run-spec files: VS Code's YAML extension and anything else built on
yaml-language-server read a first line ``# yaml-language-server: $schema=raykit.schema.json``.

``raykit spec --json-schema FILE`` writes it; ``jobs/configs/raykit.schema.json`` is a copy that a test keeps
current. What the schema does not say, :func:`raykit.spec.load_spec` still checks: the rules over several
fields (:mod:`raykit.spec.rules`: paths that must exist, a batch size the workers share, ...), a number
written as text (``"1e-3"``, which YAML 1.1 readers produce; the schema asks for a number), an
integer-valued float beyond 2**53, and NaN or infinity (JSON has neither). Values that depend on the
framework (model and optimizer names) are every backend's, with each framework's own in the description.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from typing import Any, Mapping

from raykit.augment import OP_HELP, OPS, USER_OP, USER_OP_FORMS
from raykit.metrics import METRIC_PATTERN
from raykit.spec.fields import SWITCH_WORDS, USER_FACTORY, choices_of, field_types, is_optional, strip_optional
from raykit.spec.reference import accepted_text
from raykit.spec.schema import RunSpec

DRAFT = "http://json-schema.org/draft-07/schema#"
SCHEMA_FILE = "raykit.schema.json"  # its name beside the shipped configs, in jobs/configs/
# JSON Schema's name for each bound rule of the field metadata (raykit.spec.fields.BOUNDS).
BOUND_KEYWORDS = {"ge": "minimum", "gt": "exclusiveMinimum", "le": "maximum", "lt": "exclusiveMaximum"}


def json_schema() -> dict:
    """The run spec's JSON Schema: an object of sections, each an object of typed fields; unknown keys
    are refused (``additionalProperties: false``) at every level."""
    return {"$schema": DRAFT, "title": "raykit run spec",
            "description": "A raykit run spec (raykit train FILE); every field is optional and defaults as "
                           "`raykit spec --reference` lists.",
            **_section(RunSpec, "")}


def json_schema_text() -> str:
    """:func:`json_schema` as the text ``raykit spec --json-schema`` writes."""
    return json.dumps(json_schema(), indent=2) + "\n"


def _section(cls: type, prefix: str) -> dict:
    types, defaults = field_types(cls), cls()
    properties = {}
    for f in dataclasses.fields(cls):
        ftype, path = types[f.name], f"{prefix}{f.name}"
        if dataclasses.is_dataclass(ftype):
            properties[f.name] = {"description": f.metadata.get("help", ""), **_section(ftype, path + ".")}
        else:
            properties[f.name] = {"description": _description(ftype, f.metadata), "default": getattr(defaults, f.name),
                                  **field_schema(ftype, f.metadata, ITEM_SCHEMAS.get(path))}
    return {"type": "object", "properties": properties, "additionalProperties": False}


def _description(ftype: Any, meta: Mapping) -> str:
    text = meta.get("help", "")
    if "backend_fact" in meta:  # the enum is every backend's; say which framework has which
        text += f" Accepted: {accepted_text(ftype, meta)}."
    return text


def field_schema(ftype: Any, meta: Mapping, items: dict | None = None) -> dict:
    """What one field accepts, as JSON Schema: its type and rules (``items``: the schema of a list's items,
    when the field metadata does not say it, as for ``augment.ops``)."""
    choices = choices_of(meta)
    if choices is not None:
        values = [*choices, *(flag for flag, word in SWITCH_WORDS.items() if word in choices)]  # on/off read as bools
        values += [None] if is_optional(ftype) else []
        if meta.get("allow_factory"):
            return {"anyOf": [{"enum": values}, {"type": "string", "pattern": USER_FACTORY.pattern}]}
        if meta.get("also"):
            return {"anyOf": [{"enum": values}, {"type": "string", "pattern": meta["also"][0]}]}
        return {"enum": values}
    if not is_optional(ftype):
        return _type_schema(ftype, meta, items)
    schema = _type_schema(strip_optional(ftype), meta, items)
    return {**schema, "type": [schema["type"], "null"]}


def _type_schema(ftype: Any, meta: Mapping, items: dict | None) -> dict:
    if ftype is bool:
        return {"type": "boolean"}
    if ftype in (int, float):
        return {"type": "integer" if ftype is int else "number", **_bounds(meta)}
    if ftype is str:
        return {"type": "string", "minLength": 1}
    if typing.get_origin(ftype) is list:
        (item_type,) = typing.get_args(ftype) or (Any,)
        schema: dict = {"type": "array",
                        "items": items or ({} if item_type is Any else _type_schema(item_type, meta, None))}
        schema.update({"minItems": 1} if meta.get("nonempty") else {})
        return {**schema, "uniqueItems": True} if meta.get("unique_items") else schema
    if ftype is dict or typing.get_origin(ftype) is dict:
        return {"type": "object", "propertyNames": {"type": "string"}}  # YAML keys may be numbers; JSON's never
    raise TypeError(f"unsupported spec annotation {ftype!r}")  # a bug in the schema, not user input


def _bounds(rules: Mapping) -> dict:
    return {keyword: rules[rule] for rule, keyword in BOUND_KEYWORDS.items() if rule in rules}


def augment_op_schemas() -> dict:
    """One item of ``augment.ops``: ``{op: NAME, ...params}``, each op's parameters typed and bounded as
    :data:`raykit.augment.OPS` says (``ordered`` ranges, lo <= hi, are left to the validator)."""
    return {"oneOf": [*(_op_schema(name, params) for name, params in OPS.items()), _user_op_schema()]}


def _user_op_schema() -> dict:
    """A user op, ``{op: "package.module:function", ...its own parameters}``: the schema checks the name's
    form; that it imports and has a fitting signature is the validator's check."""
    text = f"Your own op: 'package.module:function', {USER_OP_FORMS}; the other keys are its parameters."
    return {"type": "object", "description": text, "required": ["op"],
            "properties": {"op": {"type": "string", "pattern": USER_OP.pattern, "description": text}}}


def _op_schema(name: str, params: Mapping[str, tuple]) -> dict:
    properties: dict = {"op": {"const": name, "description": OP_HELP.get(name, "")}}
    for param, (ptype, default, rules) in params.items():
        if ptype is list:
            schema = {"type": "array", "items": {"type": "number", **_bounds(rules)}}
            if "length" in rules or "min_length" in rules:
                schema["minItems"] = rules.get("length", rules.get("min_length"))
            if "length" in rules:
                schema["maxItems"] = rules["length"]
            if "words" in rules:  # a list or one of these names (normalize's mean: imagenet)
                schema = {"anyOf": [schema, {"enum": list(rules["words"])}]}
        else:
            schema = {"type": "integer" if ptype is int else "number", **_bounds(rules)}
            if "words" in rules:  # a number or one of these strings (random_erasing's value: 0 or "random")
                schema = {"anyOf": [schema, {"enum": list(rules["words"])}]}
        properties[param] = {"description": rules["text"], "default": default, **schema}
    return {"type": "object", "description": OP_HELP.get(name, ""), "required": ["op"], "properties": properties,
            "additionalProperties": False}


# Lists whose items are checked by code, by spec path: augment.ops by raykit.spec.rules (the op catalogue),
# train.metrics by its field's item_problem (raykit.metrics.metric_problem).
ITEM_SCHEMAS = {"augment.ops": augment_op_schemas(), "train.metrics": {"type": "string", "pattern": METRIC_PATTERN}}
