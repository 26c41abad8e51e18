"""``raykit --version``: raykit's version and those of the packages a run depends on, read from the installed
distributions' metadata (nothing is imported, so it answers in milliseconds and works without a framework).

Example::

    print(version_text())
    # raykit 0.1.0
    # python 3.11.7
    # ray 2.60.0
    # torch 2.14.1
    # tensorflow not installed
"""

from __future__ import annotations

import platform
from importlib import metadata

# What --version reports -> the distributions that provide it, first found wins (TensorFlow's CPU and GPU
# builds are different distributions of the same module).
REPORTED = {"ray": ("ray",), "torch": ("torch",), "tensorflow": ("tensorflow", "tensorflow-cpu"),
            "keras": ("keras",)}
NOT_INSTALLED = "not installed"


def installed_version(distributions: tuple[str, ...]) -> str:
    """The version of the first of ``distributions`` that is installed, with its name when it is not the
    first (``"2.21.0 (tensorflow-cpu)"``), else :data:`NOT_INSTALLED`."""
    for name in distributions:
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        return version if name == distributions[0] else f"{version} ({name})"
    return NOT_INSTALLED


def version_text() -> str:
    """One ``name version`` line for raykit, Python and each package of :data:`REPORTED`."""
    from raykit import __version__

    lines = [f"raykit {__version__}", f"python {platform.python_version()}"]
    lines += [f"{label} {installed_version(names)}" for label, names in REPORTED.items()]
    return "\n".join(lines)
