"""Loading a run spec: from YAML, a dict or a ``RunSpec``, with dotted overrides, each field coerced to
its annotation and checked against its rules, then the cross-field rules (:mod:`raykit.spec.rules`)."""

from __future__ import annotations

import dataclasses
import os
import re
import typing
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from raykit.spec.fields import (SWITCH_WORDS, check_rules, choices_of, field_types, is_optional, join, origin,
                                strip_optional, type_name, unknown_key_message)
from raykit.spec.paths import set_dotted
from raykit.spec.rules import cross_field_problems
from raykit.spec.schema import RunSpec, SpecError


class _YamlLoader(yaml.SafeLoader):
    """Safe YAML loader that also reads ``1e-3`` as a number (YAML 1.2 does; PyYAML's 1.1 does not)."""


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def yaml_load(text: str, name: str | None = None) -> Any:
    """Parse YAML text safely (no Python objects), reading ``1e-3`` as a float. With ``name`` (the file the
    text came from), invalid YAML is a SpecError naming the file and the line."""
    if name is None:
        return yaml.load(text, Loader=_YamlLoader)
    try:
        return yaml.load(text, Loader=_YamlLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f", line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or getattr(exc, "reason", None) or str(exc)
        raise SpecError([("<config>", f"{name!r}{where}: not valid YAML ({problem}); accepted: a YAML mapping of "
                                      "spec sections")]) from None


def _config_text(path: Path, name: str) -> str:
    """The text of a config file; a file that is not UTF-8 text or cannot be read is a SpecError naming it."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError([("<config>", f"{name!r} is not text: byte {exc.object[exc.start]:#04x} at position "
                                      f"{exc.start} is not UTF-8; accepted: a YAML run spec (UTF-8 text)")]) from None
    except OSError as exc:
        raise SpecError([("<config>", f"{name!r} cannot be read ({exc.strerror or exc}); accepted: a readable "
                                      "YAML run spec")]) from None


def load_spec(source: "RunSpec | Mapping | str | os.PathLike | list | None" = None,
              overrides: Iterable[str | Mapping[str, Any]] | Mapping[str, Any] = (), *,
              data_from_python: bool = False) -> RunSpec:
    """Build a validated :class:`RunSpec`.

    Args:
        source: a ``RunSpec``, a nested dict, a path to a YAML file, or None for the defaults; or a list of
            them, merged left to right: mappings merge key by key, a later value (a list too) replaces an
            earlier one. A problem found in a value that one of several sources set names that source.
        overrides: ``"dotted.key=value"`` strings (values parsed as YAML) or ``{dotted.key: value}``
            mappings (one, or several mixed with strings in a list), applied in order on top of the source.
            A key may index a list field (``augment.ops.0.degrees``, ``model.filters.-1``); a key ending in
            ``+`` appends its value to one (``augment.ops+={op: hflip}``).
        data_from_python: the data comes with the call (``raykit.train(spec, datasets=...)``): the spec
            must name none of its own (``data.uri`` may stay ``digits``, the default, or be the record of an
            earlier run fed from Python), and ``data.uri`` becomes ``python:`` until the data is fingerprinted.

    Raises:
        SpecError: naming every invalid field, its value and what is accepted.

    Example::

        load_spec("jobs/configs/digits_cnn_torch.yaml", ["train.epochs=2"]).train.epochs  # 2
        load_spec(["base.yaml", "exp.yaml"], ["augment.ops+={op: hflip}"])
    """
    return _load(source, overrides, starting_weights=True, data_from_python=data_from_python)


def load_trained_spec(source: "RunSpec | Mapping | str | os.PathLike | list",
                      overrides: Iterable[str | Mapping[str, Any]] | Mapping[str, Any] = ()) -> RunSpec:
    """:func:`load_spec` for the spec a run was trained with (a checkpoint's manifest, a run's ``spec.yaml``),
    read back to use what it trained: checked like any spec, except that the files the run started from
    (``model.pretrained``'s ImageNet file, ``finetune.init_from``) need not exist any more: the checkpoint
    holds the weights. Exporting, predicting, evaluating or opening a run then works on a machine without
    them (another node, a cleared cache, ``HF_HUB_OFFLINE``). A new run from the spec checks them again.

    Example::

        spec = load_trained_spec(manifest["spec"], ["data.uri=new.parquet"])
    """
    return _load(source, overrides, starting_weights=False)


def _load(source, overrides, starting_weights: bool, data_from_python: bool = False) -> RunSpec:
    raw, origins = _merged_sources(source)
    problems: list[tuple[str, str]] = []
    for path, value in _parse_overrides(overrides):
        try:
            set_dotted(raw, path, value)
        except SpecError as exc:
            problems.extend(exc.problems)
        origins.set(_field_part(path), None)
    if data_from_python:
        problems.extend(_data_from_python(raw))
    try:
        spec = _build(RunSpec, raw, "")
        problems += cross_field_problems(spec, starting_weights)  # once every field is well typed
    except SpecError as exc:
        problems.extend(exc.problems)
    if problems:
        raise SpecError([(path, origins.name_source(path, message)) for path, message in problems])
    return spec


PENDING_PYTHON_URI = "python:"  # data.uri of data passed from Python, before its fingerprint is known


def _data_from_python(raw: dict) -> list[tuple[str, str]]:
    """Mark ``raw``'s data as passed from Python; its own sources are refused (no silent choice of one)."""
    data = raw.setdefault("data", {})
    if not isinstance(data, dict):
        return []  # building the section reports it
    uri = data.get("uri")
    named = [("uri", uri)] if uri not in (None, "digits") and not str(uri).startswith(PENDING_PYTHON_URI) else []
    named += [(key, data.pop(key)) for key in ("train_uri", "val_uri", "test_uri") if data.get(key)]  # said once
    data["uri"] = PENDING_PYTHON_URI
    return [(f"data.{key}", f"got {value!r} with datasets passed from Python; accepted: one source of data, the "
                            f"datasets argument (leave data.{key} unset) or the spec's data.{key} (no datasets)")
            for key, value in named]


def _merged_sources(source: Any) -> "tuple[dict, Origins]":
    """The raw dict of one source, or of several merged left to right, with where each value came from."""
    if not isinstance(source, (list, tuple)):
        return _raw_dict(source), Origins()
    merged: dict = {}
    origins = Origins()
    for number, item in enumerate(source, 1):
        raw = _raw_dict(item)
        label = str(item) if isinstance(item, (str, os.PathLike)) else f"source {number}"
        _merge_into(merged, raw, label, origins, "")
    if len(source) < 2:
        origins = Origins()  # one source: every value came from it
    return merged, origins


def _merge_into(base: dict, update: Mapping, label: str, origins: "Origins", prefix: str) -> None:
    for key, value in update.items():
        path = join(prefix, str(key))
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge_into(base[key], value, label, origins, path)
        elif isinstance(value, Mapping):
            base[key] = {}
            origins.set(path, label)
            _merge_into(base[key], value, label, origins, path)
        else:
            base[key] = _deep_copy(value)
            origins.set(path, label)


def _field_part(path: str) -> str:
    """``augment.ops`` of ``augment.ops.0.degrees`` or ``augment.ops+``: the path up to a list index."""
    parts = path.removesuffix("+").split(".")
    numbered = [i for i, part in enumerate(parts) if re.fullmatch(r"-?\d+", part)]
    return ".".join(parts[: numbered[0]] if numbered else parts)


class Origins:
    """Which source (a file, or None for an override) last set each dotted path, to name it in a problem."""

    def __init__(self) -> None:
        self.by_path: dict[str, str | None] = {}

    def set(self, path: str, label: str | None) -> None:
        for known in [known for known in self.by_path if known.startswith(path + ".")]:
            del self.by_path[known]  # replaced with the value at path
        self.by_path[path] = label

    def name_source(self, path: str, message: str) -> str:
        """``message`` plus ``(set in FILE)`` when a source set ``path`` or a value above it."""
        parts = re.sub(r"\[(\d+)\]", r".\1", path).split(".")  # augment.ops[2].p -> augment.ops.2.p
        for depth in range(len(parts), 0, -1):
            prefix = ".".join(parts[:depth])
            if prefix in self.by_path:
                label = self.by_path[prefix]
                return f"{message} (set in {label})" if label else message
        return message


def _raw_dict(source: Any) -> dict:
    if source is None:
        return {}
    if isinstance(source, RunSpec):
        return source.to_dict()
    if isinstance(source, Mapping):
        return _deep_copy(source)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise SpecError([("<config>", f"file {str(source)!r} does not exist; give a YAML run spec path")])
        data = yaml_load(_config_text(path, str(source)), str(source))
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise SpecError([("<config>", f"{str(source)!r} holds a {type(data).__name__}; "
                                          "accepted: a YAML mapping of spec sections")])
        return data
    raise SpecError([("<config>", f"got {type(source).__name__}; accepted: RunSpec, dict or YAML path")])


def _deep_copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_deep_copy(v) for v in value]
    return value


def parse_override(text: str) -> tuple[str, Any]:
    """Split ``"optim.lr=0.01"`` into ``("optim.lr", 0.01)``; the value is parsed as YAML (JSON works)."""
    if not isinstance(text, str) or "=" not in text:
        raise SpecError([("--set", f"got {text!r}; accepted: KEY=VALUE with a dotted key, e.g. optim.lr=0.01")])
    path, _, value_text = text.partition("=")
    path = path.strip()
    if not path:
        raise SpecError([("--set", f"got {text!r}; the key before '=' is empty")])
    try:
        value = yaml_load(value_text) if value_text.strip() else ""
    except yaml.YAMLError:
        value = value_text  # not YAML: keep the text and let the field's type decide
    return path, value


def _parse_overrides(overrides: Iterable[str | Mapping[str, Any]] | Mapping[str, Any]) -> list[tuple[str, Any]]:
    if isinstance(overrides, (Mapping, str)):
        overrides = [overrides]
    pairs: list[tuple[str, Any]] = []
    for item in overrides:
        pairs.extend(item.items() if isinstance(item, Mapping) else [parse_override(item)])
    return pairs


# --------------------------------------------------------------------------------------------------
# Validation: type checks from the annotations, rules from the field metadata


def _build(cls: type, raw: Any, prefix: str) -> Any:
    if not isinstance(raw, Mapping):
        raise SpecError([(prefix or "<config>", f"got {raw!r}; accepted: a mapping of "
                                                f"{', '.join(f.name for f in dataclasses.fields(cls))}")])
    problems: list[tuple[str, str]] = []
    kwargs = _build_fields(cls, raw, prefix, problems)
    if problems:
        raise SpecError(problems)
    return cls(**kwargs)


def _build_fields(cls: type, raw: Mapping, prefix: str, problems: list) -> dict:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    types = field_types(cls)
    for key in raw:
        if key not in fields:
            problems.append((join(prefix, str(key)), unknown_key_message(str(key), fields)))
    kwargs = {}
    for name, f in fields.items():
        if name not in raw:
            continue
        path = join(prefix, name)
        ftype = types[name]
        if dataclasses.is_dataclass(ftype):
            try:
                kwargs[name] = _build(ftype, raw[name], path)
            except SpecError as exc:
                problems.extend(exc.problems)
            continue
        ok, value, message = _field_value(raw[name], ftype, f.metadata)
        if ok:
            kwargs[name] = value
        else:
            problems.append((path, message))
    return kwargs


def _field_value(value: Any, ftype: Any, meta: Mapping) -> tuple[bool, Any, str]:
    """One field's own checks: ``value`` coerced to the annotation, then the rules in its metadata."""
    ok, value, message = _coerce(_switch_word(value, meta), ftype)
    if not ok:
        return False, None, message
    rule_problem = check_rules(value, meta)
    return (False, None, rule_problem) if rule_problem else (True, value, "")


def field_at(path: str) -> tuple[Any, Mapping]:
    """The annotation and the metadata of the field at ``path`` (``optim.lr``)."""
    *sections, name = path.split(".")
    cls: Any = RunSpec
    for section in sections:
        cls = field_types(cls)[section]
    return field_types(cls)[name], {f.name: f for f in dataclasses.fields(cls)}[name].metadata


def field_problem(path: str, value: Any) -> str:
    """What the checks of the one field at ``path`` (``optim.lr``) say against ``value``, or '' when it
    passes them (the rules over several fields, :mod:`raykit.spec.rules`, are not run)."""
    return _field_value(value, *field_at(path))[2]


def _switch_word(value: Any, meta: Mapping) -> Any:
    """YAML 1.1 reads ``on`` and ``off`` as true and false: give a field whose choices are those words the
    word back (``train.channels_last: off``)."""
    if isinstance(value, bool) and SWITCH_WORDS[value] in (choices_of(meta) or ()):
        return SWITCH_WORDS[value]
    return value


def _coerce(value: Any, ftype: Any) -> tuple[bool, Any, str]:
    """Check ``value`` against the annotation ``ftype``; return (ok, value, message)."""
    if is_optional(ftype):
        if value is None:
            return True, None, ""
        ftype = strip_optional(ftype)
    bad = f"got {value!r} ({type(value).__name__}); accepted: {type_name(ftype)}"
    if ftype is bool:
        return (True, value, "") if isinstance(value, bool) else (False, None, bad)
    if ftype is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return True, value, ""
        if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
            return True, int(value), ""
        return False, None, bad
    if ftype is float:
        return _coerce_float(value, bad)
    if ftype is str:
        return (True, value, "") if isinstance(value, str) and value else (False, None, bad)
    if origin(ftype) is list:
        return _coerce_list(value, ftype, bad)
    if origin(ftype) is dict or ftype is dict:
        if not isinstance(value, Mapping):
            return False, None, bad
        if not all(isinstance(k, str) for k in value):
            return False, None, f"got {value!r}; accepted: a mapping with text keys"
        return True, _deep_copy(value), ""
    raise TypeError(f"unsupported spec annotation {ftype!r}")  # a bug in the schema, not user input


_FLOAT_TEXT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _coerce_float(value: Any, bad: str) -> tuple[bool, Any, str]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str) and _FLOAT_TEXT.match(value.strip()):
        number = float(value)  # YAML 1.1 reads "1e-3" as text
    else:
        return False, None, bad
    if number != number or number in (float("inf"), float("-inf")):
        return False, None, f"got {value!r}; accepted: a finite number"
    return True, number, ""


def _coerce_list(value: Any, ftype: Any, bad: str) -> tuple[bool, Any, str]:
    if not isinstance(value, (list, tuple)):
        return False, None, bad
    (item_type,) = typing.get_args(ftype) or (Any,)
    items = []
    for index, item in enumerate(value):
        if item_type is Any:
            items.append(item)
            continue
        ok, coerced, message = _coerce(item, item_type)
        if not ok:
            return False, None, f"item {index}: {message}"
        items.append(coerced)
    return True, items, ""
