"""Files and storage locations a user names, opened and checked on the driver before Ray starts.

Every check is cheap: a manifest, a file's header or zip directory, a listing of a bucket -- never a whole
model. (Data files are opened by :func:`raykit.data.plan_data`: every Parquet footer, an ``.npz``'s
arrays, one decoded image per source.) A problem raises :class:`InputError`, naming the file, what is
wrong with it and what was expected; the CLI exits 2 with that one message, nothing started.

Weights files are recognised by their layout, without importing torch or TensorFlow:

============================  ================================================================
``.safetensors``              the 8-byte header length, the JSON header, every tensor's byte range
                              inside the file (a truncated file fails here)
``.keras``                    a zip archive (its directory is at the end: truncation fails) with
                              a ``config.json`` that parses
``.h5`` / ``.weights.h5``     the HDF5 signature, then opened by h5py (it checks the file's
                              recorded end against its size)
anything else (``.pt``, ...)  what ``torch.save`` writes: a zip archive with a ``data.pkl``
                              record, or a legacy pickle
a directory                   a raykit checkpoint: ``manifest.json`` parses, is raykit's format,
                              and every file it lists is there with the listed size
============================  ================================================================

Whether a ``.pt`` holds a state dict (and not some other object) needs its pickle read as data, so the
torch backend checks that in its own driver check (:mod:`raykit.backends.torch.weights_fit`).
"""

from __future__ import annotations

import contextlib
import json
import posixpath
import struct
import zipfile

import yaml

from raykit import storage
from raykit.checkpoint import FORMAT, MANIFEST, CheckpointError
from raykit.data.errors import DataError
from raykit.retention import SNAPSHOT as RAY_SNAPSHOT  # Ray Train's record of a run's checkpoints
from raykit.spec import SpecError, yaml_load

Problems = list[tuple[str, str]]
# Errors in what a user gave (a spec, data, a checkpoint or weights file) wherever they are raised, a Ray
# worker included: reported as raykit's one message, never as a traceback.
INPUT_ERRORS = (SpecError, DataError, CheckpointError)
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
RESUME_PREFIX = "checkpoint_epoch="  # raykit.resume.CHECKPOINT_PREFIX: the directories a resume reads
RUN_SPEC_FILE = "spec.yaml"  # raykit.run.SPEC_FILE (not imported: raykit.run imports this module, via inference)
_MAX_SAFETENSORS_HEADER = 100 * 2**20  # the safetensors format's own limit on its JSON header


class InputError(SpecError):
    """A file or location a user named cannot be used; ``problems`` are ``(field, message)`` pairs, each
    message naming the file, what is wrong and what was expected."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        ValueError.__init__(self, "invalid input:\n" + "\n".join(f"  {field}: {message}"
                                                                 for field, message in problems))


class FileProblem(ValueError):
    """What is wrong with one file (the message names it), before a caller ties it to a spec field."""


def check(problems: Problems) -> None:
    """Raise :class:`InputError` when there are problems."""
    if problems:
        raise InputError(problems)


def run_inputs(spec, run_dir: str, *, resume: bool = True) -> None:
    """Check what a run reads, beyond its data (:func:`raykit.data.plan_data` opens that): the storage's
    bucket, the run's own files when it continues under its name (``resume``), ``finetune.init_from`` and
    a registered model's ImageNet weights file. Raises :class:`InputError` listing every problem."""
    from raykit.backends import backend_info

    check(storage_problems(spec.storage, "storage"))  # nothing below reads when the store cannot be reached
    problems = resume_problems(run_dir) if resume else []
    if spec.finetune.init_from != "scratch":
        problems += weights_problems(spec.finetune.init_from, "finetune.init_from", spec.framework)
    pretrained = backend_info(spec.framework).imagenet_weights_file(spec.model.name)
    if spec.model.pretrained == "imagenet" and pretrained is not None:
        problems += weights_problems(str(pretrained), "model.pretrained")
    check(problems)


# --- weights files and checkpoint directories -------------------------------------------------------------


def weights_problems(location: str, field: str, framework: str | None = None) -> Problems:
    """``[(field, message)]`` when ``location`` (a path or URI) is not a weights file or raykit checkpoint
    that can be read (see the module's table), or is a checkpoint of another ``framework``."""
    try:
        if _is_directory(location):
            found = checkpoint_manifest(location, field).get("framework")
            if framework and found != framework:
                raise _problem(location, f"a {found} checkpoint", f"a {framework} one (the spec's framework) or a "
                                                                  "weights file")
            return []
        name = location.lower().rstrip("/")
        named_for = file_framework(name)
        if framework and named_for != framework:
            raise _problem(location, f"a {named_for} weights file",
                           f"with framework {framework}: {WEIGHTS_FILES[framework]}")
        if name.endswith(".safetensors"):
            safetensors_header(location)
        elif name.endswith(".keras"):
            _check_keras_archive(location)
        elif name.endswith(".h5"):
            _check_hdf5(location)
        else:
            _check_torch_file(location)
    except InputError as exc:
        return exc.problems
    except FileProblem as exc:
        return [(field, str(exc))]
    return []


# What each backend's ``finetune.init_from`` reads, beside a raykit checkpoint directory of its framework.
WEIGHTS_FILES = {"torch": "a raykit torch checkpoint directory, a torch.save file (.pt, .pth, ...) or .safetensors",
                 "tf": "a raykit tf checkpoint directory, a .keras file or a .weights.h5 file"}


def file_framework(name: str) -> str:
    """The framework whose files ``name`` is named as: Keras's ``.keras`` and ``.h5``, else torch's."""
    return "tf" if name.lower().endswith((".keras", ".h5")) else "torch"


def _problem(location: str, what: str, expected: str) -> FileProblem:
    """``FileProblem("<location>: <what is wrong>; expected <what would do>")``."""
    return FileProblem(f"{location}: {what}; expected {expected}")


def checkpoint_manifest(location: str, field: str = "checkpoint") -> dict:
    """The manifest of the raykit checkpoint directory ``location`` (path or URI), checked without reading
    the weights: ``manifest.json`` parses and is raykit's format, and every file it lists is there with the
    listed size (a truncated file fails here; contents are hashed where they are loaded). Raises
    :class:`InputError` naming ``field`` and the file.

    Example: ``checkpoint_manifest("runs/exp1/checkpoint_epoch=0015")["framework"]``"""
    path = storage.join(location, MANIFEST)
    expected = "the manifest.json a raykit checkpoint holds"
    try:
        if not storage.exists(path):
            raise _problem(location, f"no {MANIFEST}, so not a complete raykit checkpoint", "a checkpoint directory "
                                                                                           "raykit wrote")
        text = _read_text(path)
        try:
            manifest = json.loads(text)
        except json.JSONDecodeError as exc:
            raise _problem(path, f"not valid JSON ({exc.msg}: line {exc.lineno} column {exc.colno}, in "
                                 f"{len(text)} characters: truncated?)", expected) from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
            raise _problem(path, f"not a raykit checkpoint manifest (format {found!r})", f"format {FORMAT!r}")
        _check_listed_files(location, manifest)
    except FileProblem as exc:
        raise InputError([(field, str(exc))]) from None
    return manifest


def _check_listed_files(location: str, manifest: dict) -> None:
    import pyarrow.fs

    files = manifest.get("files")
    if not isinstance(files, dict) or manifest.get("weights") not in files:
        raise _problem(storage.join(location, MANIFEST), "lists no weights file", "the manifest raykit writes")
    fs, root = storage.filesystem(location)
    infos = fs.get_file_info([posixpath.join(root, name) for name in files])
    for (name, entry), info in zip(files.items(), infos):
        file = storage.join(location, name)
        if info.type != pyarrow.fs.FileType.File:
            raise _problem(file, "listed in the manifest but missing", "every file of the checkpoint")
        if isinstance(entry, dict) and entry.get("bytes") is not None and info.size != entry["bytes"]:
            raise _problem(file, f"{info.size} bytes, the manifest lists {entry['bytes']} (truncated or altered)",
                           "the file as the checkpoint wrote it")


def safetensors_header(location: str) -> dict:
    """The JSON header of a ``.safetensors`` file (path or URI), read alone and checked: every tensor's byte
    range lies inside the file. Raises :class:`FileProblem` naming the file.

    Example: ``{name: entry["shape"] for name, entry in safetensors_header("vit.safetensors").items()}``"""
    expected = "a complete .safetensors file"
    with _open_input(location) as (handle, size):
        head = handle.read(8)
        if len(head) < 8:
            raise _problem(location, f"{size} bytes, fewer than the 8 of a safetensors header length", expected)
        (length,) = struct.unpack("<Q", head)
        if length > min(size - 8, _MAX_SAFETENSORS_HEADER):
            raise _problem(location, f"its first 8 bytes give a header of {length} bytes, but the file has {size} "
                                     "(truncated, or another format?)", expected)
        try:
            header = json.loads(handle.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise _problem(location, f"its header is not JSON ({exc})", expected) from None
    if not isinstance(header, dict):
        raise _problem(location, f"its header is a {type(header).__name__}, not a mapping", expected)
    data_bytes = size - 8 - length
    for name, entry in header.items():
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if name == "__metadata__":
            continue
        if not (isinstance(offsets, list) and len(offsets) == 2 and isinstance(entry.get("shape"), list)):
            raise _problem(location, f"tensor {name!r} has no shape or data offsets in the header", expected)
        if not 0 <= offsets[0] <= offsets[1] <= data_bytes:
            raise _problem(location, f"tensor {name!r} ends at byte {offsets[1]} of the data, but the file holds "
                                     f"{data_bytes} bytes of data (truncated?)", expected)
    return header


def _check_keras_archive(location: str) -> None:
    expected = "a .keras model file (model.save('model.keras'))"
    with _open_input(location) as (handle, _), _zip(handle, location, expected) as archive:
        if "config.json" not in archive.namelist():
            raise _problem(location, "a zip archive without config.json", expected)
        try:
            json.loads(archive.read("config.json"))
        except (ValueError, zipfile.BadZipFile, OSError) as exc:
            raise _problem(location, f"its config.json does not read ({exc})", expected) from None


def _check_hdf5(location: str) -> None:
    expected = "a complete Keras .h5 / .weights.h5 file"
    with _open_input(location) as (handle, size):
        if handle.read(8) != HDF5_SIGNATURE:
            raise _problem(location, f"{size} bytes that do not start with the HDF5 signature", expected)
        handle.seek(0)
        try:
            import h5py
        except ImportError:  # Keras needs h5py, so it is there wherever the file can be loaded
            return
        try:
            h5py.File(handle, "r").close()
        except OSError as exc:  # h5py's message ends with the reason in parentheses
            reason = str(exc).rsplit("(", 1)[-1].rstrip(")")
            raise _problem(location, f"{size} bytes that do not open as HDF5 ({reason})", expected) from None


def _check_torch_file(location: str) -> None:
    expected = "a torch weights file (torch.save of a state dict: .pt / .pth), .safetensors, or a raykit checkpoint"
    with _open_input(location) as (handle, size):
        first = handle.read(1)
        handle.seek(0)
        if first == b"\x80":  # a pickle (protocol 2+): torch.save's legacy format; torch reads the rest
            return
        if first != b"P":
            raise _problem(location, f"{size} bytes that are neither a zip archive nor a pickle", expected)
        with _zip(handle, location, expected) as archive:
            if not any(name.endswith("data.pkl") for name in archive.namelist()):
                raise _problem(location, "a zip archive without a data.pkl record", expected)


@contextlib.contextmanager
def _zip(handle, location: str, expected: str):
    try:
        archive = zipfile.ZipFile(handle)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise _problem(location, f"not a readable zip archive ({exc}: truncated?)", expected) from None
    with archive:
        yield archive


# --- resuming a run ----------------------------------------------------------------------------------------


def resume_problems(run_dir: str) -> Problems:
    """What would stop the run in ``run_dir`` from being continued under its name: its ``spec.yaml`` or
    Ray's checkpoint record unreadable, or checkpoints none of which checks (the worker falls back from a
    damaged latest checkpoint to the newest earlier one that verifies; none means it cannot resume)."""
    problems: Problems = []
    try:
        spec_path = storage.join(run_dir, RUN_SPEC_FILE)
        if storage.exists(spec_path) and not isinstance(yaml_load(_read_text(spec_path)), dict):
            raise _problem(spec_path, "not a YAML mapping", "the spec.yaml raykit wrote")
        snapshot = storage.join(run_dir, RAY_SNAPSHOT)
        if storage.exists(snapshot):
            json.loads(_read_text(snapshot))
    except (ValueError, yaml.YAMLError) as exc:  # FileProblem and json's errors are ValueErrors
        problems.append(("name", f"the run directory {run_dir} exists but does not read ({exc}); expected the files "
                                 "of an earlier run to resume: use a new name, or repair or remove that directory"))
    return problems + _checkpoint_problems(run_dir)


def _checkpoint_problems(run_dir: str) -> Problems:
    checkpoints = storage.list_dirs(run_dir, RESUME_PREFIX)
    first_problem = None
    for checkpoint in reversed(checkpoints):
        try:
            checkpoint_manifest(checkpoint, "name")
            return []
        except InputError as exc:
            first_problem = first_problem or exc.problems[0][1]
    if first_problem is None:
        return []
    return [("name", f"the run {run_dir} cannot be resumed: none of its {len(checkpoints)} checkpoints is complete "
                     f"(the latest: {first_problem}); expected at least one intact checkpoint, or use a new name")]


# --- storage locations --------------------------------------------------------------------------------------


def storage_problems(location: str, field: str) -> Problems:
    """An object store's bucket (``s3://bucket/...``, ``gs://...``) exists and answers with these
    credentials: one request. Local paths are checked when the run's lock file is written there."""
    import pyarrow.fs

    if location.split("://", 1)[0] not in ("s3", "gs", "gcs") or "://" not in location:
        return []
    try:
        fs, path = storage.filesystem(location)
        bucket = path.split("/", 1)[0]
        missing = fs.get_file_info(bucket).type == pyarrow.fs.FileType.NotFound
    except (OSError, ValueError) as exc:
        return [(field, f"got {location!r}, which cannot be reached ({exc}); expected a location these credentials "
                        "(AWS_* or GOOGLE_APPLICATION_CREDENTIALS, AWS_ENDPOINT_URL) can list")]
    if missing:
        return [(field, f"got {location!r}: the bucket {bucket!r} does not exist (or these credentials cannot see "
                        "it); expected an existing bucket this process can reach")]
    return []


# --- reading ------------------------------------------------------------------------------------------------


def _is_directory(location: str) -> bool:
    import pyarrow.fs

    fs, path = storage.filesystem(location)
    return fs.get_file_info(path).type == pyarrow.fs.FileType.Directory


@contextlib.contextmanager
def _open_input(location: str):
    """``(seekable binary file, size)`` of a path or URI; a missing or unreadable file: :class:`FileProblem`."""
    import pyarrow.fs

    try:
        fs, path = storage.filesystem(location)
        info = fs.get_file_info(path)
        handle = fs.open_input_file(path) if info.type == pyarrow.fs.FileType.File else None
    except (OSError, ValueError) as exc:
        raise FileProblem(f"{location}: cannot be opened ({exc})") from None
    if handle is None:
        raise _problem(location, "no such file", "a weights file or a checkpoint directory")
    with handle:
        yield handle, info.size


def _read_text(location: str) -> str:
    """The UTF-8 text of a path or URI, or a :class:`FileProblem` naming it."""
    try:
        return storage.read_text(location)
    except UnicodeDecodeError as exc:
        raise FileProblem(f"{location}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at position "
                          f"{exc.start})") from None
    except OSError as exc:
        raise FileProblem(f"{location}: cannot be read ({exc})") from None
