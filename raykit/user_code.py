"""Importing the user's own code that a spec names as ``"package.module:function"`` (a model factory, an
augmentation op): the one place raykit imports a module by a name it was given. Stdlib only, so that the
spec, the registry and the augmentation catalogue can all use it without importing each other."""

from __future__ import annotations

import importlib
from typing import Any, Callable


def import_factory(text: str, field: str = "") -> Callable[..., Any]:
    """Import ``"package.module:function"`` and return the callable, with errors naming ``field`` (if any)."""
    prefix = f"{field}: " if field else ""
    module_name, _, attr = text.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # not only ImportError: the user's module may fail while it runs
        raise ImportError(f"{prefix}cannot import module {module_name!r} from {text!r}: "
                          f"{type(exc).__name__}: {exc}") from exc
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ImportError(f"{prefix}module {module_name!r} has no callable {attr!r} (from {text!r})")
    return factory
