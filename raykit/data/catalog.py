"""Named datasets in a local data cache: ``data.uri: cifar10`` reads ``$RAYKIT_DATA_HOME/cifar10/``.

A named dataset's directory holds ``train.parquet`` and ``test.parquet`` (columns ``image``: encoded image
bytes, ``label``: int64 class index) and ``SOURCE.json``, which says where the data came from. The source
matters for results: the official CIFAR-10 release holds raw pixels, a JPEG re-encoding of it trains to a
lower accuracy, so a run names it in its data description (:attr:`CachedDataset.description`).

:func:`get` fills the cache (``raykit data get cifar10``): it downloads the official binary release (or
takes an archive laid out like it, by URL or path), checks the archive's MD5, and converts its records to
Parquet; or it copies a directory that already holds ``train.parquet`` and ``test.parquet``. It writes into
a temporary directory beside the target and renames it at the end, so a failure leaves nothing half-written.

Example::

    raykit data get cifar10                          # download (162 MB) and convert: ~/.cache/raykit/data/cifar10
    raykit data get cifar10 --from ../shared/data/cifar10
    raykit train jobs/configs/cifar10_cnn.yaml       # data.uri: cifar10
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass

import numpy as np

from raykit.data.errors import DataError

DATA_HOME_ENV = "RAYKIT_DATA_HOME"
DEFAULT_DATA_HOME = "~/.cache/raykit/data"
SOURCE_FILE = "SOURCE.json"
SPLIT_FILES = {"train": "train.parquet", "test": "test.parquet"}
EMBEDDED = ("digits",)  # named datasets that ship inside a package: nothing to cache
ROWS_PER_GROUP = 5_000  # the unit a streaming reader decodes at once, as in ../shared/data/cifar10
DOWNLOAD_CHUNK = 1 << 20


@dataclass(frozen=True)
class Release:
    """A dataset's official archive: where it is, its published MD5, and which members hold which split.

    ``members`` maps a split to archive member file names (matched by base name); each member is a run of
    records of one label byte followed by the image's pixels as planes (channels, height, width)."""

    name: str
    url: str
    md5: str
    description: str
    members: dict
    meta_member: str
    image_shape: tuple  # (height, width, channels)
    class_names: tuple


CIFAR10 = Release(
    name="cifar10", url="https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
    md5="c32a1d4ab5d03f1284b67883e8d87530",
    description="the official CIFAR-10 binary release (Krizhevsky 2009; raw pixels)",
    members={"train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)), "test": ("test_batch.bin",)},
    meta_member="batches.meta.txt", image_shape=(32, 32, 3),
    class_names=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"))

CATALOG = {release.name: release for release in (CIFAR10,)}
NAMED_DATASETS = (*EMBEDDED, *CATALOG)


def is_named_dataset(uri: str | None) -> bool:
    """Whether ``data.uri`` names a dataset (``digits``, ``cifar10``) rather than a location."""
    return uri in NAMED_DATASETS


# data.uri of data given from Python (raykit.data.from_python): no location either.
PYTHON_URI = "python:"  # a run fed datasets from Python records python:<fingerprint hash>
FACTORY_URI = "py:"  # a factory: py:package.module:function


def is_from_python(uri: str | None) -> bool:
    """Whether ``data.uri`` says the data comes from Python (a ``py:`` factory, or ``python:`` datasets)."""
    return isinstance(uri, str) and uri.startswith((PYTHON_URI, FACTORY_URI))


def refuse_python_data(uri: str) -> None:
    """A DataError for a ``data.uri`` of data from Python (``python:`` or ``py:``): whoever is given such data
    (raykit.train, tune, evaluate) plans it; it is never read from the spec alone."""
    if uri.startswith(PYTHON_URI):
        raise DataError(f"data.uri: got {uri!r}, the record of datasets passed from Python (raykit.train(spec, "
                        "datasets=...)), of which raykit keeps no copy; accepted: the same datasets passed again "
                        "(raykit.train, raykit.tune or raykit.evaluate with datasets=...), or data.uri set to "
                        "stored data (--set data.uri=...)")
    if uri.startswith(FACTORY_URI):
        raise DataError(f"data.uri: got the factory {uri!r}, which raykit.train, raykit.tune and raykit.evaluate "
                        "(and their commands) call; this command reads stored data only; accepted here: data.uri "
                        "set to stored data (--set data.uri=...)")


def data_home() -> str:
    """The local data cache: ``$RAYKIT_DATA_HOME``, else ``~/.cache/raykit/data``."""
    return os.path.abspath(os.path.expanduser(os.environ.get(DATA_HOME_ENV) or DEFAULT_DATA_HOME))


@dataclass(frozen=True)
class CachedDataset:
    """A named dataset found in the cache: its directory and what its ``SOURCE.json`` says."""

    name: str
    directory: str
    source: dict

    def file(self, split: str) -> str:
        return os.path.join(self.directory, SPLIT_FILES[split])

    @property
    def description(self) -> str:
        """Where the data came from, for a run's record: ``cifar10: <source>; <encoding> images, in <dir>``."""
        encoding = self.source.get("encoding")
        stored = f"; images stored as {encoding}" if encoding else ""
        return f"{self.name}: {self.source.get('source', 'source not recorded')}{stored}, in {self.directory}"


def locate(name: str, home: str | None = None) -> CachedDataset:
    """The cached dataset ``name``; a :class:`DataError` naming the directory and the command that fills it
    when its files are not there."""
    directory = os.path.join(home or data_home(), name)
    missing = [file for file in SPLIT_FILES.values() if not os.path.isfile(os.path.join(directory, file))]
    if missing:
        raise DataError(f"data.uri: {name!r} is a named dataset read from the local data cache {directory}, which "
                        f"holds no {' or '.join(missing)}; fill it with `raykit data get {name}` (downloads the "
                        f"official release) or `raykit data get {name} --from DIR` (an archive laid out like it, or "
                        f"a directory with train.parquet and test.parquet), or set {DATA_HOME_ENV} to the cache "
                        "that holds it")
    source_path = os.path.join(directory, SOURCE_FILE)
    source = {"source": f"not recorded (no {SOURCE_FILE})"}
    if os.path.isfile(source_path):
        with open(source_path) as handle:
            source = json.load(handle)
    return CachedDataset(name, directory, source)


def resolve_named(data):
    """``(data, cached)``: a ``DataSpec`` whose ``uri`` names a cached dataset becomes one that reads its
    files (train from ``train.parquet``, test from ``test.parquet`` unless ``test_uri`` is given, validation
    carved out of train by ``val_fraction``), with the :class:`CachedDataset`; any other ``data`` is
    returned as it is, with None."""
    if data.uri not in CATALOG:
        return data, None
    cached = locate(data.uri)
    return dataclasses.replace(data, uri=cached.file("train"), test_uri=data.test_uri or cached.file("test")), cached


# ---- filling the cache: raykit data get


@dataclass
class GetSummary:
    """What :func:`get` did: the dataset's directory, its ``SOURCE.json``, rows and bytes per file."""

    directory: str
    source: dict
    files: dict  # file name -> (rows, bytes)
    already_there: bool = False


def get(name: str, src: str | None = None, *, home: str | None = None, md5: str | None = None,
        force: bool = False, progress: bool = False) -> GetSummary:
    """Fill ``<home>/<name>/`` (home: :func:`data_home`) with ``train.parquet``, ``test.parquet`` and
    ``SOURCE.json``.

    Args:
        name: a catalog name (``cifar10``).
        src: None (download the official release), an ``http(s)://`` or ``file://`` URL or a local path of
            an archive laid out like the official one, or a local directory holding ``train.parquet`` and
            ``test.parquet`` (copied as they are).
        md5: the archive's expected MD5 (default: the official archive's); an archive that differs is refused.
        force: replace a dataset already in the cache (else it is left as it is and reported).
        progress: draw download and conversion progress bars.
    """
    release = _release(name)
    target = os.path.join(os.path.abspath(os.path.expanduser(home or data_home())), name)
    present = _present(target, force)
    if present is not None:
        return present
    os.makedirs(os.path.dirname(target), exist_ok=True)
    work = tempfile.mkdtemp(prefix=f".{name}-partial-", dir=os.path.dirname(target))
    os.chmod(work, 0o755)  # mkdtemp's 0700 would keep the cache from other users of a shared machine
    try:
        if src is not None and os.path.isdir(os.path.expanduser(src)):
            source = _copy_parquet_dir(release, os.path.abspath(os.path.expanduser(src)), work)
        else:
            archive, source = _fetch_archive(release, src, md5, work, progress)
            source.update(_convert_archive(release, archive, work, progress))
            if os.path.dirname(archive) == work:
                os.remove(archive)
        source["written"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        with open(os.path.join(work, SOURCE_FILE), "w") as handle:
            json.dump(source, handle, indent=1)
        files = {file: _rows_and_bytes(os.path.join(work, file)) for file in SPLIT_FILES.values()}
        _install(work, target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return GetSummary(target, source, files)


def _release(name: str) -> Release:
    if name not in CATALOG:
        raise DataError(f"NAME: got {name!r}; accepted: {', '.join(CATALOG)}")
    return CATALOG[name]


def _present(target: str, force: bool) -> GetSummary | None:
    """The dataset already at ``target`` (when complete and not ``force``); an error for other files there."""
    if force or not os.path.exists(target) or not os.listdir(target):
        return None
    try:
        cached = locate(os.path.basename(target), os.path.dirname(target))
    except DataError:
        raise DataError(f"--dest: {target} exists and is not a complete dataset (no train.parquet and "
                        "test.parquet); accepted: --force to replace it, or another --dest") from None
    files = {file: _rows_and_bytes(os.path.join(target, file)) for file in SPLIT_FILES.values()}
    return GetSummary(target, cached.source, files, already_there=True)


def _install(work: str, target: str) -> None:
    """Move the finished ``work`` directory to ``target`` (replacing what was there) with renames."""
    if not os.path.exists(target):
        os.rename(work, target)
        return
    old = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}-old-", dir=os.path.dirname(target))
    os.rename(target, os.path.join(old, "dataset"))
    os.rename(work, target)
    shutil.rmtree(old, ignore_errors=True)


def _rows_and_bytes(path: str) -> tuple[int, int]:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows, os.path.getsize(path)


def _fetch_archive(release: Release, src: str | None, md5: str | None, work: str,
                   progress: bool) -> tuple[str, dict]:
    """The archive's local path (downloaded into ``work`` when it is a URL) and its record for
    ``SOURCE.json``, once its MD5 matches ``md5`` (default: the release's)."""
    expected = (md5 or release.md5).lower()
    if len(expected) != 32 or any(c not in "0123456789abcdef" for c in expected):
        raise DataError(f"--md5: got {md5!r}; accepted: 32 hexadecimal digits")
    location = src or release.url
    if location.split("://", 1)[0] in ("http", "https", "file") and "://" in location:
        archive = os.path.join(work, "archive.tar.gz")
        actual = _download(location, archive, progress)
    elif os.path.isfile(os.path.expanduser(location)):
        archive = os.path.abspath(os.path.expanduser(location))
        actual = _md5_of_file(archive)
    else:
        raise DataError(f"--from: got {location!r}; accepted: an http(s):// or file:// URL or a local path of an "
                        f"archive laid out like {release.url}, or a directory holding train.parquet and "
                        "test.parquet")
    if actual != expected:
        whose = "given with --md5" if md5 else f"the official {release.name} archive's"
        raise DataError(f"--from {location}: the archive's MD5 is {actual}, expected {expected} ({whose}); nothing "
                        "was written. A partial or altered download, or another archive: for a mirror of another "
                        "archive give its MD5 with --md5")
    official = actual == release.md5
    what = release.description if official else (f"an archive laid out like {release.description} (MD5 given "
                                                  "with --md5)")
    return archive, {"name": release.name, "source": f"{what}, {location}", "from": location, "md5": actual,
                     "official_md5": official}


def _download(url: str, path: str, progress: bool) -> str:
    """Stream ``url`` to ``path``; return the MD5 of the bytes written."""
    from raykit.data.convert import _Quiet

    digest = hashlib.md5(usedforsecurity=False)
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(path, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            bar = _download_bar(total, url) if progress else _Quiet()
            while chunk := response.read(DOWNLOAD_CHUNK):
                digest.update(chunk)
                out.write(chunk)
                bar.update(len(chunk))
            bar.close()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DataError(f"--from: cannot download {url}: {reason}; accepted: a reachable URL, or --from a local "
                        "copy of the archive or of a converted dataset directory") from None
    return digest.hexdigest()


def _download_bar(total: int | None, url: str):
    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, desc=f"download {url}", mininterval=0.5)


def _md5_of_file(path: str) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        while chunk := handle.read(DOWNLOAD_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _convert_archive(release: Release, archive: str, work: str, progress: bool) -> dict:
    """Write each split's records as ``<split>.parquet`` in ``work``, rows in the archive's order (the
    official batches are already in random order, so every row group holds every class). Members are read,
    never extracted. Returns what ``SOURCE.json`` adds: encoding, class names, rows per split."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = {os.path.basename(m.name): m for m in tar.getmembers() if m.isfile()}
            wanted = [release.meta_member, *(f for files in release.members.values() for f in files)]
            missing = [name for name in wanted if name not in members]
            if missing:
                raise DataError(f"--from: the archive {archive} has no {', '.join(missing)}; accepted: an archive "
                                f"laid out like {release.url}")
            class_names = _class_names(tar.extractfile(members[release.meta_member]).read(), release)
            rows = {}
            for split, names in release.members.items():
                payloads = [(name, tar.extractfile(members[name]).read()) for name in names]
                labels, images = _records(payloads, release, len(class_names))
                _write_split(os.path.join(work, SPLIT_FILES[split]), images, labels, progress)
                rows[split] = len(labels)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DataError(f"--from: cannot read {archive} as a .tar.gz archive: {exc}") from None
    return {"encoding": "png", "class_names": class_names, "rows": rows,
            "layout": "rows in the release's order; PNG of the raw pixels (lossless)"}


def _class_names(meta: bytes, release: Release) -> list[str]:
    names = [line.strip() for line in meta.decode("utf-8", "replace").splitlines() if line.strip()]
    if not names:
        raise DataError(f"--from: {release.meta_member} in the archive names no classes; accepted: one class "
                        "name per line")
    return names


def _records(payloads: list[tuple[str, bytes]], release: Release, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels (N,) int64 and images (N, H, W, C) uint8 of the members' records (label byte + C x H x W)."""
    height, width, channels = release.image_shape
    size = 1 + height * width * channels
    labels, images = [], []
    for name, data in payloads:
        if len(data) % size:
            raise DataError(f"--from: {name} is {len(data)} bytes, not a whole number of {size}-byte records "
                            "(1 label byte + the image's pixel planes)")
        records = np.frombuffer(data, np.uint8).reshape(-1, size)
        if len(records) and records[:, 0].max() >= num_classes:
            raise DataError(f"--from: {name} has label {records[:, 0].max()}, but batches.meta.txt names "
                            f"{num_classes} classes")
        labels.append(records[:, 0].astype(np.int64))
        images.append(records[:, 1:].reshape(-1, channels, height, width).transpose(0, 2, 3, 1))
    return np.concatenate(labels), np.concatenate(images)


def _write_split(path: str, images: np.ndarray, labels: np.ndarray, progress: bool) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from raykit.data.convert import _progress_bar
    from raykit.data.images import encode_png

    bar = _progress_bar(len(images), progress, f"encode {os.path.basename(path)}")
    encoded = []
    for image in images:
        encoded.append(encode_png(image))
        bar.update(1)
    bar.close()
    table = pa.table({"image": pa.array(encoded, pa.binary()), "label": pa.array(labels, pa.int64())})
    pq.write_table(table, path, row_group_size=ROWS_PER_GROUP)


def _copy_parquet_dir(release: Release, directory: str, work: str) -> dict:
    """Copy a directory's ``train.parquet`` and ``test.parquet`` into ``work``; return its ``SOURCE.json``
    record: the directory, the images' encoding (from their bytes), and its README's title when it has one."""
    import pyarrow.parquet as pq

    for file in SPLIT_FILES.values():
        path = os.path.join(directory, file)
        if not os.path.isfile(path):
            raise DataError(f"--from: {directory} holds no {file}; accepted: a directory with train.parquet and "
                            "test.parquet (columns image and label), or an archive laid out like "
                            f"{release.url}")
        columns = pq.read_schema(path).names
        if not {"image", "label"} <= set(columns):
            raise DataError(f"--from: {path} has columns {', '.join(columns)}; accepted: image (encoded bytes) "
                            "and label (class index)")
        shutil.copyfile(path, os.path.join(work, file))
    earlier = _earlier_source(directory)
    encoding = _encoding(os.path.join(work, SPLIT_FILES["train"]))
    title = _readme_title(directory)
    copied = f"copied from {directory}" + (f" ({title})" if title else "")
    if earlier.get("source"):
        copied += f"; its {SOURCE_FILE}: {earlier['source']}"
    lossy = "; a JPEG re-encoding, not the official raw pixels" if encoding == "jpeg" else ""
    return {"name": release.name, "source": copied + lossy, "from": directory, "encoding": encoding,
            "class_names": earlier.get("class_names") or list(release.class_names),
            "rows": {split: _rows_and_bytes(os.path.join(work, file))[0] for split, file in SPLIT_FILES.items()},
            **({"copied_source": earlier} if earlier else {})}


def _earlier_source(directory: str) -> dict:
    path = os.path.join(directory, SOURCE_FILE)
    if not os.path.isfile(path):
        return {}
    with open(path) as handle:
        return json.load(handle)


def _encoding(path: str) -> str:
    """``png``, ``jpeg`` or ``other``: what the first image's bytes are."""
    import pyarrow.parquet as pq

    column = pq.ParquetFile(path).read_row_group(0, columns=["image"]).column(0)
    first = column[0].as_py() if len(column) else b""
    first = first.get("bytes", b"") if isinstance(first, dict) else first
    if not isinstance(first, bytes):
        return "array"
    return "png" if first.startswith(b"\x89PNG") else "jpeg" if first.startswith(b"\xff\xd8\xff") else "other"


def _readme_title(directory: str) -> str:
    path = os.path.join(directory, "README.md")
    if not os.path.isfile(path):
        return ""
    with open(path, errors="replace") as handle:
        for line in handle:
            if line.strip():
                return f"its README: {line.strip().lstrip('#').strip()!r}"
    return ""
