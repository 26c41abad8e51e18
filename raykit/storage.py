"""Files of a run on a local disk or any URI pyarrow understands (s3://, gs://, file://).

Writes are whole-file and atomic: on a local disk through a temporary file and a rename, on object
stores because an object appears only once its upload completes.
"""

from __future__ import annotations

import os
import posixpath
import tempfile
from pathlib import Path


def is_uri(location: str) -> bool:
    return "://" in location


def resolve_storage(storage: str) -> str:
    """An absolute local path (workers change directory) or the URI unchanged."""
    if is_uri(storage):
        return storage
    return str(Path(storage).expanduser().resolve())


def join(base: str, *parts: str) -> str:
    if is_uri(base):
        return posixpath.join(base, *parts)
    return os.path.join(base, *parts)


def filesystem(location: str):
    """``(pyarrow filesystem, path in it)`` for a local path or URI. Schemes pyarrow knows (file, s3, gs,
    hdfs) use its native filesystems, which read the standard credentials and ``AWS_ENDPOINT_URL`` (an
    S3-compatible store); any other fsspec scheme (memory://, az://, ...) is wrapped for pyarrow."""
    import pyarrow.fs

    if not is_uri(location):
        return pyarrow.fs.LocalFileSystem(), os.path.abspath(location)
    scheme = location.split("://", 1)[0]
    if scheme in _PYARROW_SCHEMES:
        fs, path = pyarrow.fs.FileSystem.from_uri(location)
        return (_s3_with_settings(fs) if scheme == "s3" else fs), path
    import fsspec

    fs, path = fsspec.core.url_to_fs(location)
    return pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(fs)), path


def _s3_with_settings(fs):
    """An S3 filesystem carrying the environment's keys and endpoint inside it. One made from the default
    credential chain pickles without them, so a Ray actor started before the keys were set (Ray Train's
    controller gets only RAY_* variables) would reach the store anonymously; this one pickles whole."""
    import pyarrow.fs

    key, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    if not (key and secret):
        return fs
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None
    scheme = "https"
    if endpoint and "://" in endpoint:
        scheme, endpoint = endpoint.split("://", 1)
    return pyarrow.fs.S3FileSystem(access_key=key, secret_key=secret, session_token=os.environ.get("AWS_SESSION_TOKEN"),
                                   region=fs.region, endpoint_override=endpoint, scheme=scheme)


_PYARROW_SCHEMES = ("file", "s3", "gs", "gcs", "hdfs", "viewfs")


def served_by_pyarrow(location: str) -> bool:
    """Whether ``location`` is a URI that pyarrow's own filesystems serve (s3://, gs://, hdfs://, file://),
    not fsspec."""
    return is_uri(location) and location.split("://", 1)[0] in _PYARROW_SCHEMES


def write_bytes(location: str, data: bytes) -> None:
    """Write ``data`` to ``location`` as one atomic step, creating parent directories."""
    if not is_uri(location) or location.startswith("file://"):
        path = Path(location.removeprefix("file://"))
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return
    fs, path = filesystem(location)
    fs.create_dir(posixpath.dirname(path), recursive=True)
    with fs.open_output_stream(path) as stream:
        stream.write(data)


def write_text(location: str, text: str) -> None:
    write_bytes(location, text.encode())


def read_bytes(location: str) -> bytes:
    fs, path = filesystem(location)
    with fs.open_input_stream(path) as stream:
        return stream.read()


def read_text(location: str) -> str:
    return read_bytes(location).decode()


def exists(location: str) -> bool:
    import pyarrow.fs

    fs, path = filesystem(location)
    return fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound


def download_dir(location: str, local_dir: str) -> str:
    """Copy the directory at ``location`` (path or URI) into ``local_dir``; return ``local_dir``."""
    import pyarrow.fs

    fs, path = filesystem(location)
    os.makedirs(local_dir, exist_ok=True)  # copy_files creates sub-directories only, not local_dir itself
    pyarrow.fs.copy_files(path, local_dir, source_filesystem=fs, destination_filesystem=pyarrow.fs.LocalFileSystem())
    return local_dir


def list_dirs(location: str, prefix: str) -> list[str]:
    """Locations of the sub-directories of ``location`` whose names start with ``prefix``, sorted by name."""
    import pyarrow.fs

    fs, path = filesystem(location)
    if fs.get_file_info(path).type == pyarrow.fs.FileType.NotFound:
        return []
    infos = fs.get_file_info(pyarrow.fs.FileSelector(path))
    names = sorted(i.base_name for i in infos if i.type == pyarrow.fs.FileType.Directory
                   and i.base_name.startswith(prefix))
    return [join(location, name) for name in names]


def list_files(location: str) -> list[str]:
    """Names of the files directly in the directory ``location`` (none when it does not exist)."""
    import pyarrow.fs

    fs, path = filesystem(location)
    if fs.get_file_info(path).type != pyarrow.fs.FileType.Directory:
        return []
    infos = fs.get_file_info(pyarrow.fs.FileSelector(path))
    return sorted(i.base_name for i in infos if i.type == pyarrow.fs.FileType.File)
