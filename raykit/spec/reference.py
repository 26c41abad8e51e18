"""The spec reference, generated from the schema: every field, what it accepts, its default and meaning.

``raykit spec --reference`` prints :func:`reference_page`, which is ``docs/spec-reference.md``; a test
keeps the two equal. Regenerate with ``raykit spec --reference > docs/spec-reference.md``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import yaml

from raykit.backends import backend_info, backend_names
from raykit.spec.fields import bounds_text, choices_of, field_types, is_optional, join, type_name
from raykit.spec.schema import RunSpec

PAGE_HEADER = """\
# Spec reference

Every field of the run spec, generated from the spec classes by `raykit spec --reference` (regenerate
with `raykit spec --reference > docs/spec-reference.md`; a test keeps this page current). A field is set
in the YAML file by its section (`optim: {lr: 0.01}`) or on the command line by its dotted path
(`--set optim.lr=0.01`). Values that depend on the framework (model and optimizer names) are listed per
registered backend.

"""


def field_reference() -> list[tuple[str, str, Any, str]]:
    """Every spec field as ``(dotted path, accepted values, default, help)``, for docs and ``--help``."""
    rows = []

    def walk(cls: type, prefix: str) -> None:
        types = field_types(cls)
        defaults = cls()
        for f in dataclasses.fields(cls):
            path = join(prefix, f.name)
            ftype = types[f.name]
            if dataclasses.is_dataclass(ftype):
                walk(ftype, path)
            else:
                rows.append((path, accepted_text(ftype, f.metadata), getattr(defaults, f.name),
                             f.metadata.get("help", "")))

    walk(RunSpec, "")
    return rows


def accepted_text(ftype: Any, meta: Mapping) -> str:
    """What a field accepts, in words: its type plus its choices or bounds."""
    choices = choices_of(meta)
    if choices is not None:
        listed = _per_backend(meta["backend_fact"]) if "backend_fact" in meta else ", ".join(map(str, choices))
        text = "one of " + listed
        if meta.get("allow_factory"):
            text += ", or 'package.module:function'"
        if meta.get("also"):
            text += f", or {meta['also'][1]}"
        return text + (" (or null)" if is_optional(ftype) else "")
    bounds = bounds_text(meta)
    return type_name(ftype) + (f", {bounds}" if bounds else "")


def _per_backend(fact: str) -> str:
    """``a, b`` when every backend has the same values of ``fact``, else ``a, b (torch); a (tf)``."""
    values = {name: tuple(getattr(backend_info(name), fact)) for name in backend_names()}
    if len(set(values.values())) == 1:
        return ", ".join(next(iter(values.values())))
    return "; ".join(f"{', '.join(names)} ({backend})" for backend, names in values.items())


def reference_markdown() -> str:
    """The spec reference table in Markdown."""
    lines = ["| field | accepted | default | meaning |", "|---|---|---|---|"]
    for path, accepted, default, help_text in field_reference():
        shown = yaml.safe_dump(default, default_flow_style=True).strip().removesuffix("...").strip()
        lines.append(f"| `{path}` | {accepted} | `{shown}` | {help_text.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def reference_page() -> str:
    """``docs/spec-reference.md``: a short header and :func:`reference_markdown`."""
    return PAGE_HEADER + reference_markdown()
