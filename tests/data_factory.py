"""Small datasets written by the tests, in every format raykit reads, to a local path or any fsspec URI.

Images are random uint8 pixels whose class is also written into pixel (0, 0), so a test can check that
labels travel with their images through every reader."""

from __future__ import annotations

import io
import posixpath

import fsspec
import numpy as np

from raykit.data.images import encode_png


def images(n: int, classes: int, size: int = 8, channels: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = rng.integers(0, 256, (n, size, size, channels), dtype=np.uint8)
    x[:, 0, 0, :] = (y * 20)[:, None]
    return x, y.astype(np.int64)


def _put(uri: str, data: bytes) -> None:
    fs, path = fsspec.core.url_to_fs(uri)
    fs.makedirs(posixpath.dirname(path) or "/", exist_ok=True)
    with fs.open(path, "wb") as handle:
        handle.write(data)


def write_npz(uri: str, x: np.ndarray, y: np.ndarray, **extra) -> str:
    buffer = io.BytesIO()
    np.savez(buffer, x=x, y=y, **extra)
    _put(uri, buffer.getvalue())
    return uri


def write_image_folder(uri: str, x: np.ndarray, y: np.ndarray, names=("ant", "bee", "cat", "dog")) -> str:
    for i, (image, label) in enumerate(zip(x, y)):
        _put(f"{uri}/{names[label]}/{i:04d}.png", encode_png(image))
    return uri


def write_parquet(uri: str, x: np.ndarray, y: np.ndarray, *, layout: str = "png", files: int = 2,
                  rows_per_group: int = 7, label_column: str = "label") -> str:
    """``layout``: png (encoded bytes), tensor (fixed_shape_tensor), lists (nested lists)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for part, rows in enumerate(np.array_split(np.arange(len(y)), files)):
        if layout == "png":
            column = pa.array([encode_png(im) for im in x[rows]], pa.binary())
        elif layout == "tensor":
            column = pa.FixedShapeTensorArray.from_numpy_ndarray(np.ascontiguousarray(x[rows]))
        else:
            column = pa.array([im.tolist() for im in x[rows]])
        table = pa.table({"image": column, label_column: pa.array(y[rows], pa.int64())})
        buffer = io.BytesIO()
        pq.write_table(table, buffer, row_group_size=rows_per_group)
        _put(f"{uri}/part-{part}.parquet", buffer.getvalue())
    return uri


def digits_splits(rows: int | None = None, as_ray: bool = False, columns: tuple[str, str] = ("image", "label")) -> dict:
    """A ``data.uri: py:tests.data_factory:digits_splits`` factory: the embedded digits as uint8 pixels (8, 8),
    split in order into train / val / test (70/15/15; the first ``rows`` rows only, if given), each an (x, y)
    NumPy pair, or with ``as_ray`` a Ray Dataset of ``columns`` rows (from_items)."""
    from raykit.data import digits

    x, y = digits.load()
    x, y = (x[..., 0] * 255).round().astype(np.uint8)[:rows], y[:rows]
    cut = [int(len(y) * 0.7), int(len(y) * 0.85)]
    parts = dict(zip(("train", "val", "test"), zip(np.split(x, cut), np.split(y, cut))))
    if not as_ray:
        return parts
    import ray.data

    image, label = columns
    return {name: ray.data.from_items([{image: row, label: int(target)} for row, target in zip(*pair)],
                                      override_num_blocks=2)  # not ~200 blocks of a few rows: a task each
            for name, pair in parts.items()}
