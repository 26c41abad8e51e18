"""Dotted spec paths (``optim.lr``, ``tune.search_space.optim.lr``, ``augment.ops.0.degrees``): setting one
in a raw dict, checked against the schema step by step, and telling whether a path names a field.

A step after a list field is an item index (``model.filters.1``, ``augment.ops.-1.degrees``), and a path
ending in ``+`` appends its value to a list field (``augment.ops+`` from ``--set 'augment.ops+={op: hflip}'``).
"""

from __future__ import annotations

import dataclasses
import re
import typing
from typing import Any

from raykit.spec.fields import field_types, origin, type_name, unknown_key_message
from raykit.spec.schema import RunSpec, SpecError

APPEND = "+"
_INDEX = re.compile(r"^-?\d+$")


class IndexOutOfRange(SpecError):
    """A list index beyond the list's items: a problem of the values, not of the path."""


def spec_path_problem(path: str) -> str:
    """'' when ``path`` (e.g. ``optim.lr``, ``augment.ops.0.degrees``) names a spec field, else what is wrong
    with it. An index is checked against the list's length where the path is applied to a spec."""
    try:
        set_dotted({}, path, None)
    except IndexOutOfRange:
        return ""
    except SpecError as exc:
        return exc.problems[0][1]
    return ""


def set_dotted(raw: dict, path: str, value: Any) -> None:
    """Set ``raw[a][b][c] = value`` for ``path == "a.b.c"``, checking each step against the schema; index or
    append to a list field as the module docstring says (a list ``raw`` lacks starts as the default)."""
    append = path.endswith(APPEND)
    parts = path.removesuffix(APPEND).split(".")
    cls: Any = RunSpec
    node = raw
    for depth, part in enumerate(parts):
        here = ".".join(parts[: depth + 1])
        if cls is dict:  # inside a free-form mapping field: the rest of the path is one key (it may hold
            _refuse_append(append, here, "a key of a mapping")  # dots: tune.search_space.optim.lr sets key "optim.lr")
            node[".".join(parts[depth:])] = value
            return
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if part not in fields:
            raise SpecError([(here, unknown_key_message(part, fields))])
        ftype = field_types(cls)[part]
        if origin(ftype) is list:
            if part not in node:
                node[part] = getattr(cls(), part)  # a fresh copy of the default list
            _set_in_list(node, part, ftype, parts[depth + 1:], value, append, here)
            return
        if depth == len(parts) - 1:
            _refuse_append(append, here, type_name(ftype))
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


def _refuse_append(append: bool, here: str, what: str) -> None:
    """``what``: what ``here`` is, in words."""
    if append:
        raise SpecError([(here, f"got '{here}{APPEND}=...', but '{APPEND}=' appends to a list field and {here} is "
                                f"{what}; accepted: {here}=VALUE")])


def _set_in_list(node: dict, name: str, ftype: Any, rest: list[str], value: Any, append: bool, here: str) -> None:
    """``node[name]`` is a list field; ``rest`` is what follows it in the path: nothing, or an index and
    maybe a key of that item (``ops.0.degrees``)."""
    if not rest and not append:
        node[name] = value
        return
    items = node[name]
    if not isinstance(items, list):
        raise SpecError([(here, f"got {items!r} ({type(items).__name__}), which has no items to index or append "
                                f"to; accepted: {type_name(ftype)}")])
    if not rest:
        items.append(value)
        return
    index = _item_index(rest[0], items, here)
    where, item_type = f"{here}.{rest[0]}", typing.get_args(ftype)[0]
    if len(rest) == 1:
        _refuse_append(append, where, type_name(item_type))
        items[index] = value
        return
    if not (item_type is dict or origin(item_type) is dict):
        raise SpecError([(where, f"holds {type_name(item_type)}, which has no sub-key {rest[1]!r}")])
    if not isinstance(items[index], dict):
        raise SpecError([(where, f"got {items[index]!r} ({type(items[index]).__name__}), which has no sub-key "
                                 f"{rest[1]!r}; accepted: {type_name(item_type)}")])
    key = ".".join(rest[1:])
    _refuse_append(append, f"{where}.{key}", "a key of a mapping")
    items[index][key] = value


def _item_index(text: str, items: list, here: str) -> int:
    """The list index ``text`` names, checked against the list's length."""
    append = f"'{here}{APPEND}=VALUE' to append"
    accepted = f"an index 0..{len(items) - 1} (or -1 for the last), or {append}" if items else append
    held = f"{len(items)} item{'' if len(items) == 1 else 's'}"
    if not _INDEX.match(text):
        raise SpecError([(f"{here}.{text}", f"got {text!r}, but {here} is a list ({held}), indexed by number; "
                                            f"accepted: {accepted}")])
    index = int(text)
    if not -len(items) <= index < len(items):
        raise IndexOutOfRange([(f"{here}.{text}", f"index {index} is out of range: {here} holds {held}; "
                                            f"accepted: {accepted}")])
    return index
