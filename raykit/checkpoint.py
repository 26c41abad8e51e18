"""The framework-neutral part of a raykit checkpoint: a directory with a manifest.

A checkpoint directory holds the backend's files (weights, optimizer, RNG) and ``manifest.json``:
the format, framework, epoch, global step, metrics, trainer state, the spec, and a SHA-256 for every
other file. The manifest is written last and atomically, so a directory without one is incomplete,
and a file whose checksum differs is detected on load.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
FORMAT = "raykit-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete or altered; the message names the file."""


class UnsafeFileError(CheckpointError):
    """A weights or checkpoint file holds Python code (pickled objects, a Keras ``Lambda``), not only
    data; it is refused unloaded, because loading it would run that code. The message names the file."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(directory: str | os.PathLike, *, framework: str, state: dict, metrics: dict,
                   spec: dict, weights: str) -> dict:
    """Checksum every file in ``directory`` and write the manifest last (tmp file + rename)."""
    root = Path(directory)
    files = {p.relative_to(root).as_posix(): {"sha256": _sha256(p), "bytes": p.stat().st_size}
             for p in sorted(root.rglob("*")) if p.is_file() and p.name != MANIFEST}
    manifest = {"format": FORMAT, "version": FORMAT_VERSION, "framework": framework, "weights": weights,
                "epoch": state.get("epoch"), "global_step": state.get("global_step"),
                "metrics": metrics, "state": state, "spec": spec, "files": files}
    tmp = root / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=1, default=float))
    os.replace(tmp, root / MANIFEST)
    return manifest


def read_manifest(directory: str | os.PathLike, *, verify: bool = True) -> dict[str, Any]:
    """Read and (by default) verify a checkpoint's manifest against its files."""
    root = Path(directory)
    path = root / MANIFEST
    if not path.is_file():
        raise CheckpointError(f"{root}: no {MANIFEST}; not a complete raykit checkpoint")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: unreadable manifest ({exc})") from None
    if manifest.get("format") != FORMAT:
        raise CheckpointError(f"{path}: format {manifest.get('format')!r} is not {FORMAT!r}")
    if verify:
        for name, expected in manifest["files"].items():
            file = root / name
            if not file.is_file():
                raise CheckpointError(f"{file}: listed in the manifest but missing")
            if _sha256(file) != expected["sha256"]:
                raise CheckpointError(f"{file}: checksum differs from the manifest (truncated or altered)")
    return manifest
