"""Spec fields: the help text and rules kept in each dataclass field's metadata, and what they mean.

A field's metadata holds ``help`` plus rules: ``choices`` (a tuple, or a function returning one, for
values known only at run time such as the registered backends), ``allow_factory`` (also a
``"package.module:function"``), ``also`` (``(regex, words)``: also a value matching the regex, which
:mod:`raykit.spec.rules` checks further), ``backend_fact`` (the value must also be in that attribute of the chosen
backend's :class:`~raykit.backends.base.BackendInfo`; checked by :mod:`raykit.spec.rules`), ``nonempty``,
and the bounds ``gt``, ``ge``, ``lt``, ``le`` (for lists: of every item).
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import typing
from dataclasses import field
from typing import Any, Mapping

# A user's model factory: "package.module:function".
USER_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
# YAML 1.1 reads the words on and off as true and false: a field whose choices hold the word takes it back.
SWITCH_WORDS = {True: "on", False: "off"}


def spec_field(default: Any = dataclasses.MISSING, *, help: str, **rules: Any) -> Any:
    """A dataclass field with its help text and validation rules kept in the metadata."""
    meta = {"help": help, **rules}
    if isinstance(default, (list, dict)):
        value = default
        return field(default_factory=lambda: type(value)(value), metadata=meta)
    return field(default=default, metadata=meta)


def choices_of(meta: Mapping) -> tuple | None:
    """The field's accepted values (calling ``choices`` when it is a function), or None when free."""
    choices = meta.get("choices")
    return tuple(choices()) if callable(choices) else choices


def check_rules(value: Any, meta: Mapping) -> str:
    """Return a message when ``value`` breaks a rule in the field metadata, else ''."""
    if value is None:
        return ""
    choices = choices_of(meta)
    if choices is not None and value not in choices:
        if meta.get("allow_factory") and isinstance(value, str) and USER_FACTORY.match(value):
            return ""
        also = meta.get("also")
        if also and isinstance(value, str) and re.match(also[0], value):
            return ""
        accepted = ", ".join(map(str, choices))
        if meta.get("allow_factory"):
            accepted += ", or a factory 'package.module:function'"
        if also:
            accepted += f", or {also[1]}"
        return f"got {value!r}{did_you_mean(value, choices)}; accepted: {accepted}"
    if isinstance(value, list):
        if meta.get("nonempty") and not value:
            return "got an empty list; accepted: at least one item"
        problems = []
        for index, item in enumerate(value):
            problem = _check_bounds(item, meta) or (meta["item_problem"](item) if "item_problem" in meta else "")
            if not problem and meta.get("unique_items") and item in value[:index]:
                problem = f"got {item!r} twice; accepted: each once"
            problems += [f"item {index}: {problem}"] if problem else []
        return "; ".join(problems)
    return _check_bounds(value, meta)


def did_you_mean(value: Any, choices: typing.Iterable) -> str:
    """`` (did you mean 'cnn'?)`` when ``value`` is close to one of ``choices``, else ''."""
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


BOUNDS = (("gt", ">", lambda v, b: v > b), ("ge", ">=", lambda v, b: v >= b),
          ("lt", "<", lambda v, b: v < b), ("le", "<=", lambda v, b: v <= b))


def _check_bounds(value: Any, meta: Mapping) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return ""
    failed = [(symbol, meta[key]) for key, symbol, test in BOUNDS if key in meta and not test(value, meta[key])]
    if not failed:
        return ""
    return f"got {value!r}; accepted: a number {bounds_text(meta)}"


def bounds_text(meta: Mapping) -> str:
    """``> 0.0 and <= 10.0``: the field's bounds in words ('' when it has none)."""
    return " and ".join(f"{symbol} {meta[key]}" for key, symbol, _ in BOUNDS if key in meta)


# --------------------------------------------------------------------------------------------------
# Annotations


def field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def origin(ftype: Any) -> Any:
    return typing.get_origin(ftype)


try:  # Python 3.10+: `int | None` is a types.UnionType
    from types import UnionType as _UnionType
except ImportError:  # pragma: no cover
    _UnionType = typing.Union  # type: ignore[assignment,misc]


def is_optional(ftype: Any) -> bool:
    return origin(ftype) in (typing.Union, _UnionType) and type(None) in typing.get_args(ftype)


def strip_optional(ftype: Any) -> Any:
    (inner,) = [a for a in typing.get_args(ftype) if a is not type(None)]
    return inner


def type_name(ftype: Any) -> str:
    """What an annotation accepts, in words (``an integer or null``)."""
    if is_optional(ftype):
        return f"{type_name(strip_optional(ftype))} or null"
    names = {bool: "true/false", int: "an integer", float: "a number", str: "non-empty text",
             dict: "a mapping"}
    if ftype in names:
        return names[ftype]
    if origin(ftype) is list:
        (item,) = typing.get_args(ftype) or (Any,)
        return "a list" if item is Any else f"a list of {type_name(item)}"
    if origin(ftype) is dict:
        return "a mapping"
    return getattr(ftype, "__name__", str(ftype))


def unknown_key_message(key: str, fields: Mapping[str, Any]) -> str:
    close = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown key{hint}; accepted keys: {', '.join(fields)}"


def join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name
