"""``raykit data convert SRC DST``: an image folder or ``.npz`` as sharded Parquet, ready for object storage.

Rows are shuffled (seeded) before they are cut into files and row groups, so a streamed chunk mixes
classes. Image-folder files are copied byte for byte (a JPEG stays a JPEG); ``.npz`` arrays are encoded
as 8-bit PNG. Labels are written as class names when the source has them (image folders), which read
back to the same indices. Each file is written whole and atomically: a crash leaves no half-written shard.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from raykit import storage
from raykit.data.errors import DataError
from raykit.data.images import encode_png
from raykit.data.sources import ReadOptions, Source, detect_format, open_source


@dataclass
class ConvertSummary:
    rows: int
    files: list[str]
    bytes_written: int
    class_names: list[str] | None


def convert(src: str, dst: str, *, fmt: str = "auto", rows_per_file: int = 10_000, rows_per_group: int = 1_000,
            seed: int = 0, progress: bool = True) -> ConvertSummary:
    """Write the dataset at ``src`` (image folder or .npz; local path or URI) to ``dst`` as Parquet files
    ``part-00000.parquet, ...`` with an ``image`` column (encoded bytes) and a ``label`` column."""
    if rows_per_file < 1 or rows_per_group < 1:
        raise DataError(f"rows per file / row group: got {rows_per_file} / {rows_per_group}; accepted: >= 1")
    # Image files are converted to RGB (a folder mixing modes becomes one); arrays keep their channels.
    fmt = detect_format(src, fmt)  # once: for a directory that lists it
    source = open_source(src, fmt, ReadOptions(color_mode="auto" if fmt in ("npz", "digits") else "rgb"))
    if source.format not in ("image_folder", "npz", "digits"):
        raise DataError(f"SRC: got a {source.format} source ({src}); accepted: an image folder, a .npz file or "
                        "digits (Parquet is already Parquet)")
    if storage.exists(dst) and storage.list_files(dst):
        raise DataError(f"DST: {dst} already holds files; accepted: a new or empty directory (nothing is "
                        "overwritten)")
    order = np.random.default_rng(seed).permutation(len(source))
    files, written = [], 0
    bar = _progress_bar(len(order), progress, f"{src} -> {dst}")
    for number, start in enumerate(range(0, len(order), rows_per_file)):
        rows = order[start:start + rows_per_file]
        payload = _parquet_bytes(source, rows, rows_per_group, bar)
        location = storage.join(dst, f"part-{number:05d}.parquet")
        storage.write_bytes(location, payload)
        files.append(location)
        written += len(payload)
    bar.close()
    return ConvertSummary(len(order), files, written, source.class_names)


def _parquet_bytes(source: Source, rows: np.ndarray, rows_per_group: int, bar) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    images = []
    for row in rows:
        images.append(_encoded(source, int(row)))
        bar.update(1)
    labels = source.labels[rows]
    if source.class_names:
        label_column = pa.array([source.class_names[i] for i in labels], pa.string())
    else:
        label_column = pa.array(labels, pa.int64())
    table = pa.table({"image": pa.array(images, pa.binary()), "label": label_column})
    buffer = io.BytesIO()
    pq.write_table(table, buffer, row_group_size=rows_per_group)
    return buffer.getvalue()


def _encoded(source: Source, row: int) -> bytes:
    if source.format == "image_folder":
        return source._read_file(source.files[row])
    return encode_png(source.arrays[0][row])


class _Quiet:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(total: int, enabled: bool, description: str):
    if not enabled:
        return _Quiet()
    from tqdm import tqdm

    return tqdm(total=total, unit="img", desc=description, mininterval=0.5)
