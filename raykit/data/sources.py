"""Dataset sources by URI: listed (labels, chunks) up front, decoded chunk by chunk when read.

Formats: ``digits`` (embedded), NumPy ``.npz`` (arrays ``x`` and ``y``), Parquet (a label column and an
image column of encoded bytes or of fixed-shape arrays; one file or a directory of files) and image
folders (``root/<class>/<image>``). Every location is read through a pyarrow filesystem: local paths,
``file://``, ``s3://``, ``gs://`` natively, anything else (``memory://``, ...) through fsspec.

A :class:`Source` knows every row's label and how rows group into *chunks* (a Parquet row group, or a
few hundred image files) without decoding a pixel, so splits can be drawn and a streaming reader can
decode one chunk at a time on any machine: a ``Source`` pickles with its filesystem.
"""

from __future__ import annotations

import posixpath
import zipfile
from dataclasses import dataclass, field

import numpy as np

from raykit import storage
from raykit.data.errors import DataError
from raykit.data.images import as_read, color_mode_of, decode, stack_same_shape

FORMATS = ("auto", "digits", "npz", "parquet", "image_folder")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
PARQUET_EXTENSIONS = (".parquet", ".pq")
FILES_PER_CHUNK = 256


@dataclass(frozen=True)
class ReadOptions:
    """How to turn stored rows into images: the spec's ``data`` fields that concern decoding."""

    label_column: str = "label"
    image_column: str = "image"
    color_mode: str = "auto"  # auto | grayscale | rgb
    resize: tuple[int, int] | None = None


@dataclass(frozen=True)
class Chunk:
    """Rows read together: ``rows`` are row numbers of the source; ``file`` and ``row_group`` locate a
    Parquet row group (image folders name their files through the rows)."""

    rows: np.ndarray
    file: str = ""
    row_group: int = -1


@dataclass
class Source:
    """One listed dataset. ``labels[i]`` is row ``i``'s class index."""

    uri: str
    format: str
    labels: np.ndarray
    options: ReadOptions
    class_names: list[str] | None = None
    chunks: list[Chunk] = field(default_factory=list)
    files: list[str] = field(default_factory=list)  # image folders: the file of each row
    arrays: tuple[np.ndarray, np.ndarray] | None = None  # digits and npz: everything, in memory
    filesystem: object = None

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def streamable(self) -> bool:
        return self.arrays is None

    def read_chunk(self, chunk: Chunk) -> tuple[np.ndarray, np.ndarray]:
        """Images (N, H, W, C) as stored (uint8, or float32 in [0, 1]) and labels of ``chunk``'s rows."""
        if self.arrays is not None:
            return self.arrays[0][chunk.rows], self.arrays[1][chunk.rows]
        if self.format == "image_folder":
            names = [self.files[row] for row in chunk.rows]
            images = [self._decode(self._read_file(name), name) for name in names]
            return stack_same_shape(images, names), self.labels[chunk.rows]
        return self._read_row_group(chunk)

    def read_rows(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Images and labels of ``rows``, in that order, reading only the chunks that hold them."""
        rows = np.asarray(rows, dtype=np.int64)
        if self.arrays is not None:
            return self.arrays[0][rows], self.arrays[1][rows]
        wanted = np.zeros(len(self), dtype=bool)
        wanted[rows] = True
        images, row_ids = [], []
        for chunk in self.chunks:
            keep = wanted[chunk.rows]
            if keep.any():
                x, _ = self.read_chunk(chunk)
                images.append(x[keep])
                row_ids.append(chunk.rows[keep])
        if not images:
            return np.zeros((0, *self.first_image().shape), np.float32), np.zeros(0, np.int64)
        shapes = {im.shape[1:] for im in images}
        if len(shapes) > 1:
            raise DataError(f"images in {self.uri} differ in shape ({', '.join(map(str, sorted(shapes)))}); "
                            "accepted: one shape, or set data.resize: [height, width]")
        stacked = np.concatenate(images)
        position = np.empty(len(self), dtype=np.int64)
        position[np.concatenate(row_ids)] = np.arange(len(stacked))
        return stacked[position[rows]], self.labels[rows]

    def first_image(self) -> np.ndarray:
        """Row 0's image as read (to learn the input shape without reading everything)."""
        if self.arrays is not None:
            return self.arrays[0][0]
        first = Chunk(rows=self.chunks[0].rows[:1], file=self.chunks[0].file, row_group=self.chunks[0].row_group)
        if self.format == "image_folder":
            return self.read_chunk(first)[0][0]
        return self._read_row_group(first, first_only=True)[0][0]

    def _read_file(self, path: str) -> bytes:
        with self.filesystem.open_input_stream(path) as stream:
            return stream.read()

    def _decode(self, data: bytes, name: str) -> np.ndarray:
        return decode(data, name, self.options.color_mode, self.options.resize)

    def _read_row_group(self, chunk: Chunk, first_only: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """The images and labels of a row group; ``first_only``: of its first row only (the rest of the
        group's encoded images are read but not decoded: a plan learns the input shape from one image)."""
        import pyarrow.parquet as pq

        with self.filesystem.open_input_file(chunk.file) as handle:
            table = pq.ParquetFile(handle).read_row_group(chunk.row_group, columns=[self.options.image_column])
        column = table.column(0).combine_chunks()
        if first_only:
            column = column.slice(0, 1)
        name = f"{chunk.file} (row group {chunk.row_group})"
        return images_from_column(column, name, self), self.labels[chunk.rows]


def images_from_column(column, name: str, source: Source) -> np.ndarray:
    """A Parquet image column as (N, H, W, C): encoded bytes are decoded, arrays are stacked."""
    import pyarrow as pa

    if pa.types.is_struct(column.type) and column.type.get_field_index("bytes") >= 0:
        column = column.field("bytes")  # the Hugging Face datasets layout: {bytes, path}
    if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
        values = column.to_pylist()
        names = [f"{name}, row {i}" for i in range(len(values))]
        images = [source._decode(value, n) for value, n in zip(values, names)]
        return stack_same_shape(images, names)
    if isinstance(column.type, pa.FixedShapeTensorType):
        array = column.to_numpy_ndarray()
    else:
        array = _nested_lists_to_numpy(column, name)
    if array.ndim == 3:
        array = array[..., None]
    if array.ndim != 4:
        raise DataError(f"{name}: image column {source.options.image_column!r} holds arrays of shape "
                        f"{array.shape[1:]}; accepted: (height, width) or (height, width, channels)")
    if array.dtype.kind in "iu":  # integer pixels are 8-bit values
        if len(array) and (array.min() < 0 or array.max() > 255):
            raise DataError(f"{name}: integer pixels range {array.min()}..{array.max()}; accepted: 0..255, or "
                            "floats in [0, 1]")
        return array.astype(np.uint8)
    return array.astype(np.float32)


def _nested_lists_to_numpy(column, name: str) -> np.ndarray:
    import pyarrow as pa

    shape = [len(column)]
    while pa.types.is_list(column.type) or pa.types.is_large_list(column.type) or \
            pa.types.is_fixed_size_list(column.type):
        lengths = np.asarray(column.value_lengths(), dtype=np.int64) if len(column) else np.zeros(1, np.int64)
        if lengths.min() != lengths.max():
            raise DataError(f"{name}: images differ in shape (inner lengths {lengths.min()} and {lengths.max()}); "
                            "accepted: arrays of one shape per column")
        shape.append(int(lengths[0]))
        column = column.flatten()
    if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
        raise DataError(f"{name}: the image column holds {column.type}; accepted: encoded image bytes (PNG/JPEG) "
                        "or numeric arrays")
    return np.asarray(column.to_numpy(zero_copy_only=False)).reshape(shape)


def detect_format(uri: str, declared: str = "auto") -> str:
    """The format of ``uri``: ``declared`` unless it is ``auto``, else from the extension or the listing."""
    if declared != "auto":
        return declared
    if uri == "digits":
        return "digits"
    lowered = uri.split("?")[0].lower()
    if lowered.endswith(".npz"):
        return "npz"
    if lowered.endswith(PARQUET_EXTENSIONS):
        return "parquet"
    fs, path = _open(uri)
    entries = _listing(fs, path, uri)
    if any(e.is_file and e.path.lower().endswith(PARQUET_EXTENSIONS) for e in entries):
        return "parquet"
    if any(not e.is_file or e.path.lower().endswith(IMAGE_EXTENSIONS) for e in entries):
        return "image_folder"
    raise DataError(f"data.uri: cannot tell the format of {uri!r} (no .parquet files, no class folders); "
                    "accepted: .npz, .parquet, a directory of Parquet files or of class folders, or set data.format")


def open_source(uri: str, fmt: str, options: ReadOptions, labels_required: bool = True) -> Source:
    """List ``uri`` (labels and chunks; no pixels decoded except one image, for its shape). With
    ``labels_required=False`` (prediction) data without labels is read with label -1: Parquet without
    the label column, an .npz without ``y``, or an image folder of images without class folders."""
    fmt = detect_format(uri, fmt)
    if fmt == "digits":
        from raykit.data import digits

        x, y = digits.load()
        return Source(uri, fmt, y, options, arrays=(as_read(x, options.color_mode, options.resize, "the digits"), y))
    if fmt == "npz":
        return _open_npz(uri, options, labels_required)
    if fmt == "parquet":
        return _open_parquet(uri, options, labels_required)
    return _open_image_folder(uri, options, labels_required)


def _open(uri: str):
    try:
        return storage.filesystem(uri)
    except (ValueError, OSError, ImportError) as exc:
        raise DataError(f"data.uri: cannot open {uri!r}: {exc}") from None


def _listing(fs, path: str, uri: str, recursive: bool = False) -> list:
    import pyarrow.fs

    try:
        info = fs.get_file_info(path)
    except OSError as exc:  # credentials, permissions, an unreachable endpoint
        raise DataError(f"data.uri: cannot list {uri!r}: {exc}; accepted: a location these credentials can "
                        "read") from None
    if info.type == pyarrow.fs.FileType.NotFound:
        raise DataError(f"data.uri: {uri!r} does not exist")
    if info.type == pyarrow.fs.FileType.File:
        return [info]
    entries = fs.get_file_info(pyarrow.fs.FileSelector(path, recursive=recursive))
    return sorted((e for e in entries if not e.base_name.startswith((".", "_"))), key=lambda e: e.path)


def _open_npz(uri: str, options: ReadOptions, labels_required: bool = True) -> Source:
    import io

    fs, path = _open(uri)
    _listing(fs, path, uri)  # a clear error when missing
    with fs.open_input_stream(path) as stream:
        payload = stream.read()
    if not payload.startswith(b"PK"):  # np.load would take other bytes for a pickle and refuse it as one
        raise DataError(f"data.uri: {uri} ({len(payload)} bytes) is not an .npz archive (a zip of .npy arrays); "
                        "accepted: a file written by numpy.savez with images 'x' and labels 'y'")
    try:
        with np.load(io.BytesIO(payload), allow_pickle=False) as archive:
            keys = set(archive.files)
            if not labels_required and "x" in keys and "y" not in keys:
                x = archive["x"]
                y = np.full(len(x), -1, np.int64)
            elif not {"x", "y"} <= keys:
                raise DataError(f"data.uri: {uri} holds arrays {sorted(keys)}; accepted: an .npz with images 'x' "
                                "(N, H, W) or (N, H, W, C) and labels 'y' (N,)")
            else:
                x, y = archive["x"], archive["y"]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"data.uri: cannot read {uri} as .npz ({exc}: truncated?); accepted: a file written by "
                        "numpy.savez with images 'x' and labels 'y'") from None
    x = x[..., None] if x.ndim == 3 else x
    if x.ndim != 4 or len(x) != len(y):
        raise DataError(f"data.uri: {uri} has x of shape {x.shape} and y of shape {y.shape}; accepted: x (N, H, W) or "
                        "(N, H, W, C) and y (N,) with the same N")
    x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
    labels, names = _class_indices(np.asarray(y), f"{uri} array 'y'", allow_unlabelled=not labels_required)
    x = as_read(x, options.color_mode, options.resize, uri)
    return Source(uri, "npz", labels, options, class_names=names, arrays=(x, labels))


def _open_parquet(uri: str, options: ReadOptions, labels_required: bool = True) -> Source:
    import pyarrow.parquet as pq

    fs, path = _open(uri)
    files = [e.path for e in _listing(fs, path, uri, recursive=True)
             if e.is_file and e.path.lower().endswith(PARQUET_EXTENSIONS)]
    if not files:
        raise DataError(f"data.uri: {uri} holds no .parquet files")
    labels, chunks, offset = [], [], 0
    for file in files:
        with fs.open_input_file(file) as handle:
            parquet = _parquet_footer(handle, file)
            names = parquet.schema_arrow.names
            wanted = (options.label_column, options.image_column) if labels_required else (options.image_column,)
            missing = [c for c in wanted if c not in names]
            if missing:
                which = "data.label_column" if missing[0] == options.label_column else "data.image_column"
                raise DataError(f"{which}: no column {missing[0]!r} in {file}; its columns: "
                                f"{', '.join(parquet.schema_arrow.names)}")
            if options.label_column in names:
                labels.append(parquet.read(columns=[options.label_column]).column(0).to_numpy(zero_copy_only=False))
            else:
                labels.append(np.full(parquet.metadata.num_rows, -1, np.int64))
            for group in range(parquet.num_row_groups):
                rows = parquet.metadata.row_group(group).num_rows
                chunks.append(Chunk(rows=np.arange(offset, offset + rows), file=file, row_group=group))
                offset += rows
    indices, names = _class_indices(np.concatenate(labels), f"column {options.label_column!r} of {uri}",
                                    allow_unlabelled=not labels_required)
    return _with_color_mode(Source(uri, "parquet", indices, options, class_names=names, chunks=chunks,
                                   filesystem=fs))


def _parquet_footer(handle, file: str):
    """``pq.ParquetFile`` of an open file: its footer read, or a DataError naming the file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(handle)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"data.uri: {file} is not a readable Parquet file ({exc}); accepted: Parquet files, e.g. "
                        "written by `raykit data convert`") from None


def _open_image_folder(uri: str, options: ReadOptions, labels_required: bool = True) -> Source:
    fs, path = _open(uri)
    entries = _listing(fs, path, uri)
    classes = [e for e in entries if not e.is_file]
    if not classes and not labels_required:  # a flat folder of images to predict
        files = [e.path for e in entries if e.path.lower().endswith(IMAGE_EXTENSIONS)]
        return _image_source(uri, fs, files, np.full(len(files), -1, np.int64), None, options)
    if not classes:
        raise DataError(f"data.uri: {uri} has no class folders; accepted: root/<class name>/<image files>")
    files, labels = [], []
    for index, folder in enumerate(classes):
        images = [e.path for e in _listing(fs, folder.path, uri, recursive=True)
                  if e.is_file and e.path.lower().endswith(IMAGE_EXTENSIONS)]
        if not images:
            raise DataError(f"data.uri: class folder {folder.path} holds no images; accepted: each class folder "
                            f"with at least one {'/'.join(IMAGE_EXTENSIONS)} file (remove empty folders)")
        files += images
        labels += [index] * len(images)
    return _image_source(uri, fs, files, np.asarray(labels, np.int64),
                         [posixpath.basename(c.path) for c in classes], options)


def _image_source(uri: str, fs, files: list[str], labels: np.ndarray, class_names, options: ReadOptions) -> Source:
    if not files:
        raise DataError(f"data.uri: {uri} holds no images")
    # Chunks mix classes (files are listed class by class), so a streamed chunk is not one class.
    order = np.random.default_rng(0).permutation(len(files))
    chunks = [Chunk(rows=np.sort(order[i:i + FILES_PER_CHUNK])) for i in range(0, len(files), FILES_PER_CHUNK)]
    source = Source(uri, "image_folder", labels, options, class_names=class_names, chunks=chunks, files=files,
                    filesystem=fs)
    return _with_color_mode(source)


def _with_color_mode(source: Source) -> Source:
    """Fix ``color_mode: auto`` to the first image's mode, so every row decodes to the same channels."""
    if source.options.color_mode != "auto":
        return source
    if source.format == "image_folder":
        data, name = source._read_file(source.files[0]), source.files[0]
    else:
        data, name = _first_encoded(source)
        if data is None:  # an array column: channels are what they are
            return source
    source.options = ReadOptions(**{**source.options.__dict__, "color_mode": color_mode_of(data, name)})
    return source


def _first_encoded(source: Source) -> tuple[bytes | None, str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    chunk = source.chunks[0]
    with source.filesystem.open_input_file(chunk.file) as handle:
        column = pq.ParquetFile(handle).read_row_group(0, columns=[source.options.image_column]).column(0)
    column = column.combine_chunks()
    if pa.types.is_struct(column.type) and column.type.get_field_index("bytes") >= 0:
        column = column.field("bytes")
    if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
        return column[0].as_py(), f"{chunk.file}, row 0"
    return None, ""


def _class_indices(values: np.ndarray, where: str, allow_unlabelled: bool = False
                   ) -> tuple[np.ndarray, list[str] | None]:
    """Integer labels as they are (checked non-negative, or -1 for unlabelled rows when allowed); strings
    mapped to sorted class names."""
    if values.dtype.kind in "iu":
        if len(values) and values.min() < (-1 if allow_unlabelled else 0):
            raise DataError(f"{where}: label {int(values.min())} is negative; accepted: class indices 0..K-1")
        return values.astype(np.int64), None
    if values.dtype.kind in "OUS":
        names = sorted({str(v) for v in values})
        lookup = {name: i for i, name in enumerate(names)}
        return np.asarray([lookup[str(v)] for v in values], np.int64), names
    raise DataError(f"{where}: labels of type {values.dtype}; accepted: integer class indices or class-name strings")
