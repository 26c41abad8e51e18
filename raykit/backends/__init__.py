"""Framework backends with the same module names (models, checkpoint, loop), imported lazily.

``load_backend("torch").loop`` is ``raykit.backends.torch.loop``. The backend is chosen once, from
``spec.framework``; shared code never branches on the framework.
"""

from __future__ import annotations

import importlib
from types import ModuleType


def load_backend_module(framework: str, module: str) -> ModuleType:
    """Import ``raykit.backends.<framework>.<module>`` (e.g. ``("torch", "loop")``)."""
    if framework not in ("torch", "tf"):
        raise ValueError(f"framework: got {framework!r}; accepted: torch, tf")
    return importlib.import_module(f"raykit.backends.{framework}.{module}")
