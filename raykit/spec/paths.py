"""Dotted spec paths (``optim.lr``, ``tune.search_space.optim.lr``): setting one in a raw dict, checked
against the schema step by step, and telling whether a path names a field."""

from __future__ import annotations

import dataclasses
from typing import Any

from raykit.spec.fields import field_types, origin, type_name, unknown_key_message
from raykit.spec.schema import RunSpec, SpecError


def spec_path_problem(path: str) -> str:
    """'' when ``path`` (e.g. ``optim.lr``) names a spec field, else what is wrong with it."""
    try:
        set_dotted({}, path, None)
    except SpecError as exc:
        return exc.problems[0][1]
    return ""


def set_dotted(raw: dict, path: str, value: Any) -> None:
    """Set ``raw[a][b][c] = value`` for ``path == "a.b.c"``, checking each step against the schema."""
    parts = path.split(".")
    cls: Any = RunSpec
    node = raw
    for depth, part in enumerate(parts):
        here = ".".join(parts[: depth + 1])
        last = depth == len(parts) - 1
        if cls is dict:  # inside a free-form mapping field: the rest of the path is one key (it may hold
            node[".".join(parts[depth:])] = value  # dots: tune.search_space.optim.lr sets key "optim.lr")
            return
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if part not in fields:
            raise SpecError([(here, unknown_key_message(part, fields))])
        ftype = field_types(cls)[part]
        if last:
            node[part] = value
            return
        if dataclasses.is_dataclass(ftype):
            cls = ftype
        elif ftype is dict or origin(ftype) is dict:
            cls = dict
        else:
            raise SpecError([(here, f"holds {type_name(ftype)}, which has no sub-key {parts[depth + 1]!r}")])
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
