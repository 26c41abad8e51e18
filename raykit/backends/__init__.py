"""The one registry of framework backends.

A backend is a folder ``raykit/backends/<name>/`` whose ``__init__.py`` declares its facts as a
:class:`~raykit.backends.base.BackendInfo` named ``INFO`` (importing no framework) and whose
``backend.py`` implements :class:`~raykit.backends.base.Backend`. Shared code asks the registry, never
``spec.framework == ...``::

    from raykit.backends import backend_info, load_backend
    backend_info("tf").export_formats      # ('keras', 'saved_model'): no TensorFlow import
    load_backend("torch")                  # the Backend class: imports torch

Another backend (a test's, a plugin's) joins with one call: ``register(BackendInfo(...))``.
"""

from __future__ import annotations

import difflib
import importlib
from types import ModuleType

from raykit.backends.base import Backend, BackendInfo

# The built-in backends, by package; each package's INFO is registered on first use.
BUILTIN = ("raykit.backends.torch", "raykit.backends.tf")

_REGISTRY: dict[str, BackendInfo] = {}


def register(info: BackendInfo) -> BackendInfo:
    """Make ``info.name`` a valid ``framework`` (replacing an earlier registration of the same name)."""
    _REGISTRY[info.name] = info
    return info


def unregister(name: str) -> None:
    """Remove a registered backend (tests that register their own)."""
    _REGISTRY.pop(name, None)


def _ensure_builtins() -> None:
    for package in BUILTIN:
        info = importlib.import_module(package).INFO
        _REGISTRY.setdefault(info.name, info)


def backend_names() -> tuple[str, ...]:
    """Every registered backend's name (valid values of ``framework``)."""
    _ensure_builtins()
    return tuple(_REGISTRY)


def backend_info(name: str) -> BackendInfo:
    """The facts about backend ``name``; a ValueError naming ``framework`` when there is none."""
    _ensure_builtins()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(str(name), list(_REGISTRY), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"framework: got {name!r}{hint}; accepted: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def load_backend(name: str) -> type[Backend]:
    """The :class:`Backend` class of ``name`` (imports its framework)."""
    return backend_info(name).load()


def load_backend_module(framework: str, module: str) -> ModuleType:
    """Import ``raykit.backends.<framework>.<module>`` (a backend's own helpers, e.g. for its tests)."""
    backend_info(framework)
    return importlib.import_module(f"raykit.backends.{framework}.{module}")
