"""The framework-neutral part of a raykit checkpoint: a directory with a manifest.

A checkpoint directory holds the backend's files (weights, optimizer, RNG) and ``manifest.json``:
the format, framework, epoch, global step, metrics, trainer state, the spec, and a checksum for every
other file: BLAKE3 (format version 2; it hashes at several times SHA-256's speed, which bounded a save
and a restore; SHA-256 where the blake3 package is missing), or SHA-256 in version-1 manifests, which are
still verified. The manifest is written last
and atomically, so a directory without one is incomplete, and a file whose checksum differs is detected
on load.

Each byte is hashed once on each side: a backend that writes through :class:`HashingWriter` hands
:func:`write_manifest` the digests taken as the bytes went out (files written otherwise are read back
and hashed there); a loader reads its files within :func:`verifying`, which hashes them on a helper thread
meanwhile; and a caller that has just verified a directory lets the loaders that follow skip the check
within :func:`verified`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

try:
    import blake3
except ImportError:  # a declared dependency, but a bare machine (the GPU benchmark's) may lack it: SHA-256
    blake3 = None

MANIFEST = "manifest.json"
FORMAT = "raykit-checkpoint"
FORMAT_VERSION = 2  # 2: each file entry names its checksum (blake3, or sha256); 1: sha256 only
# What a manifest entry may name, the one written now first.
_DIGESTS = {**({"blake3": blake3.blake3} if blake3 else {}), "sha256": hashlib.sha256}
DIGEST = next(iter(_DIGESTS))
_OVERLAP_BYTES = 1 << 20  # blocks at least this large are hashed on a helper thread while they are written


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete or altered; the message names the file."""


class UnsafeFileError(CheckpointError):
    """A weights or checkpoint file holds Python code (pickled objects, a Keras ``Lambda``), not only
    data; it is refused unloaded, because loading it would run that code. The message names the file."""


class HashingWriter(io.RawIOBase):
    """A write-only binary stream over an open file that hashes the bytes as they go through, so a
    checkpoint file is hashed while it is written instead of read back afterwards. A large block is
    hashed on a helper thread while this one writes it (BLAKE3 and file writes both release the GIL).

    Example::

        with open(path, "wb") as file, HashingWriter(file) as writer:
            torch.save(state, writer)
        digests[path.name] = writer.entry()     # {"blake3": ..., "bytes": ...}, as in the manifest
    """

    def __init__(self, file) -> None:
        super().__init__()
        self._file = file
        self._digest = _DIGESTS[DIGEST]()
        self._bytes = 0
        self._helper: ThreadPoolExecutor | None = None

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        block = memoryview(data)
        if block.nbytes >= _OVERLAP_BYTES:
            self._helper = self._helper or ThreadPoolExecutor(1, thread_name_prefix="raykit-hash")
            hashed = self._helper.submit(self._digest.update, block)
            self._file.write(block)
            hashed.result()
        else:
            self._digest.update(block)
            self._file.write(block)
        self._bytes += block.nbytes
        return block.nbytes

    def close(self) -> None:
        if self._helper is not None:
            self._helper.shutdown()
            self._helper = None
        super().close()

    def entry(self) -> dict:
        """The file's manifest entry: ``{"blake3": hex digest, "bytes": size}``."""
        return {DIGEST: self._digest.hexdigest(), "bytes": self._bytes}


def _file_digest(path: Path, algorithm: str = DIGEST) -> str:
    """The hex checksum of a file's bytes (``algorithm``: blake3, or sha256 for version-1 manifests)."""
    digest = _DIGESTS[algorithm]()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checksum(entry: dict) -> tuple[str, str]:
    """(algorithm, hex digest) of a manifest file entry, either format version."""
    for algorithm in _DIGESTS:
        if algorithm in entry:
            return algorithm, entry[algorithm]
    if "blake3" in entry:
        raise CheckpointError("the checkpoint's files have BLAKE3 checksums, and the blake3 package (a raykit "
                              "dependency) is not installed here: pip install blake3")
    raise CheckpointError(f"manifest entry {entry} names no checksum; accepted: {', '.join(_DIGESTS)}")


def write_manifest(directory: str | os.PathLike, *, framework: str, state: dict, metrics: dict,
                   spec: dict, weights: str, digests: dict[str, dict] | None = None) -> dict:
    """List every file in ``directory`` with its checksum and write the manifest last (tmp file + rename).

    ``digests`` maps file names (relative, ``/``-separated) to the entries :meth:`HashingWriter.entry`
    took while writing them; those files are not read again (only their sizes are checked). Every other
    file is read and hashed here.
    """
    root = Path(directory)
    digests = digests or {}
    files = {}
    for path in sorted(root.rglob("*")):
        name = path.relative_to(root).as_posix()
        if not path.is_file() or name == MANIFEST:
            continue
        size = path.stat().st_size
        entry = digests.get(name) or {DIGEST: _file_digest(path), "bytes": size}
        if entry["bytes"] != size:
            raise CheckpointError(f"{path}: {size} bytes on disk, {entry['bytes']} written through the hash")
        files[name] = entry
    missing = sorted(set(digests) - set(files))
    if missing:
        raise CheckpointError(f"{root}: {', '.join(missing)} hashed while written, but not in the directory")
    manifest = {"format": FORMAT, "version": FORMAT_VERSION, "framework": framework, "weights": weights,
                "epoch": state.get("epoch"), "global_step": state.get("global_step"),
                "metrics": metrics, "state": state, "spec": spec, "files": files}
    tmp = root / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=1, default=float))
    os.replace(tmp, root / MANIFEST)
    return manifest


# Directories verified by a caller that is still using them (see `verified`): resolved path -> (manifest,
# the size and modification time of every listed file when the block began).
_VERIFIED: dict[str, tuple[dict, dict]] = {}


@contextlib.contextmanager
def verified(directory: str | os.PathLike, manifest: dict) -> Iterator[None]:
    """Within the block, :func:`read_manifest` of ``directory`` trusts the verification its caller has just
    done instead of hashing every file again (e.g. the Ray worker verifies the checkpoint it resumes from,
    then the backend's ``restore`` reads it). The manifest is still read and compared, and a listed file
    whose size or modification time changed since the block began is verified again as usual, so a
    truncated or rewritten file is still caught before it is loaded."""
    key = os.path.realpath(directory)
    _VERIFIED[key] = (manifest, _fingerprint(Path(directory), manifest))
    try:
        yield
    finally:
        _VERIFIED.pop(key, None)


def _fingerprint(root: Path, manifest: dict) -> dict:
    stats = {}
    for name in manifest.get("files", {}):
        try:
            stat = (root / name).stat()
        except OSError:
            continue
        stats[name] = (stat.st_size, stat.st_mtime_ns)
    return stats


def _trusted(root: Path, manifest: dict) -> bool:
    """Whether a caller verified this directory, with this manifest, and no listed file changed since."""
    known = _VERIFIED.get(os.path.realpath(root))
    if known is None or known[0] != manifest:
        return False
    fingerprint = _fingerprint(root, manifest)
    return len(fingerprint) == len(manifest["files"]) and fingerprint == known[1]


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
    if verify and not _trusted(root, manifest):
        _verify_files(root, manifest)
    return manifest


def _verify_files(root: Path, manifest: dict) -> None:
    """Raise CheckpointError naming the first listed file that is missing or whose checksum differs."""
    for name, expected in manifest["files"].items():
        file = root / name
        if not file.is_file():
            raise CheckpointError(f"{file}: listed in the manifest but missing")
        algorithm, digest = checksum(expected)
        if _file_digest(file, algorithm) != digest:
            raise CheckpointError(f"{file}: checksum differs from the manifest (truncated or altered)")


@contextlib.contextmanager
def verifying(directory: str | os.PathLike) -> Iterator[dict]:
    """Read a checkpoint's manifest and verify its files on a helper thread while the block reads them.

    Yields the manifest. The block's end waits for the verification and raises :class:`CheckpointError`
    (naming the file) if a file is missing or differs, also when the block itself failed on that file, so
    what the block loaded must only be used after it. Hashing (which releases the GIL) then overlaps the
    loading instead of preceding it: a restore costs about the longer of the two, not their sum. A
    directory trusted within :func:`verified` is not hashed again.

    Example::

        with verifying(directory) as manifest:
            weights = torch.load(Path(directory) / manifest["weights"], weights_only=True)
        model.load_state_dict(weights)
    """
    root = Path(directory)
    manifest = read_manifest(root, verify=False)
    if _trusted(root, manifest):
        yield manifest
        return
    with ThreadPoolExecutor(1, thread_name_prefix="raykit-verify") as helper:
        check = helper.submit(_verify_files, root, manifest)
        try:
            yield manifest
        except BaseException:
            problem = check.exception()  # a truncated file: the checksum's message, not the loader's
            if isinstance(problem, CheckpointError):
                raise problem from None
            raise
        check.result()
