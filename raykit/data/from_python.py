"""Datasets given from Python instead of read from a URI.

``raykit.train(spec, datasets={"train": ..., "val": ..., "test": ...})`` takes, for each split, a NumPy
pair ``(x, y)`` or a ``ray.data.Dataset``. ``data.uri: "py:package.module:function"`` names a factory
that returns the same (a mapping, or one dataset for training that the spec's fractions split), called
in the driver with ``data.kwargs``: the way to feed a job (``ray job submit``), where no Python object
can be passed.

This module checks what was given before Ray claims anything, plans NumPy arrays (split, shaped and
typed as the workers hold them) and fingerprints the data (each split's columns with their dtype and
shape, and its row count) so that a run resumes only on the same data. Ray Datasets are inspected by
:mod:`raykit.ray.given`, which also hands everything to the workers. Nothing here imports Ray.

``x`` holds images (N, H, W, C) or (N, H, W) as uint8 pixels or floats in [0, 1], or flat features
(N, F) as floats (any range), taken as images of shape (1, 1, F); ``y`` holds integer class indices
(N,) (or (N, 1)).
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from raykit.data.catalog import FACTORY_URI, PYTHON_URI
from raykit.data.errors import DataError
from raykit.data.splits import SPLITS, DataInfo, Split, Splits, stratified_split

FINGERPRINT_FILE = "data-fingerprint.json"  # in the run directory: what a resume must be given again
NUMPY, RAY_DATA = "NumPy arrays", "ray.data.Dataset"
ACCEPTED = ("an (x, y) pair of NumPy arrays (images (N, H, W, C) or (N, H, W) as uint8 or floats in [0, 1], or "
            "features (N, F); integer labels (N,)) or a ray.data.Dataset")


@dataclass
class Arrays:
    """One split given as NumPy arrays: ``x`` as the workers hold it (uint8 pixels, or float32, NHWC) and
    ``y`` int64, with ``facts`` about it as it was given (the fingerprint's part for this split)."""

    x: np.ndarray
    y: np.ndarray
    facts: dict


@dataclass
class GivenPlan:
    """What a run fed from Python trains on: the counterpart of :class:`~raykit.data.DataPlan`.

    ``arrays`` (loader memory) are the splits as the workers hold them; ``datasets`` (loader stream) are the
    Ray Datasets as given, whose ``columns`` (image, label) :mod:`raykit.ray.given` turns into x/y rows."""

    info: DataInfo
    loader: str  # memory | stream
    fingerprint: dict  # split -> {"kind", "rows", "columns"}: what a resume must be given again
    uri: str  # what the run's data.uri records: python:<hash>, or the py: factory
    arrays: Splits | None = None
    datasets: dict | None = None
    columns: tuple[str, str] = ("x", "y")

    @property
    def origin(self) -> str:
        kinds = sorted({facts["kind"] for facts in self.fingerprint.values()})
        return f"{self.uri} ({' and '.join(kinds)} from Python)"

    @property
    def decoded_bytes(self) -> int:
        """Bytes the training split takes decoded as float32 (as :attr:`DataPlan.decoded_bytes`)."""
        return self.float32_bytes("train")

    def float32_bytes(self, *names: str) -> int:
        return sum(self.info.sizes[name] for name in names) * int(np.prod(self.info.input_shape)) * 4

    def batches(self, name: str, batch_size: int):
        """``(x, y)`` batches of split ``name`` of the arrays (loader memory), as :meth:`DataPlan.batches`."""
        return self.arrays.batches(name, batch_size)


# --- what was given ---------------------------------------------------------------------------------------


def given_datasets(datasets: Any, data) -> dict | None:
    """The datasets a run is fed from Python, split name -> :class:`Arrays` or a Ray Dataset: ``datasets``
    (``raykit.train``'s argument), or what ``data.uri``'s ``py:`` factory returns; None for neither.

    Raises :class:`DataError` for anything but a mapping of ``train`` (required), ``val`` and ``test`` to
    datasets (or one dataset, for training), and for NumPy arrays that cannot be used. (A spec naming its
    own data beside a ``datasets`` argument is refused by ``load_spec(..., data_from_python=True)``.)"""
    if datasets is not None:
        return checked_mapping(datasets, "datasets")
    if isinstance(data.uri, str) and data.uri.startswith(FACTORY_URI):
        return checked_mapping(call_factory(data.uri, data.kwargs), f"data.uri {data.uri!r} returned")
    return None


def call_factory(uri: str, kwargs: dict) -> Any:
    """Import and call ``py:package.module:function`` with ``kwargs`` (``data.kwargs``), in this process."""
    from raykit.user_code import import_factory

    try:
        factory = import_factory(uri[len(FACTORY_URI):], "data.uri")
    except ImportError as exc:
        raise DataError(f"{exc}; accepted: 'py:package.module:function' importable where raykit.train runs (in a "
                        "job: shipped with --working-dir, or installed)") from exc
    try:
        return factory(**kwargs)
    except Exception as exc:  # the user's code: say whose it is, keep its traceback as the cause
        raise DataError(f"data.uri: the factory {uri!r} called with data.kwargs {kwargs} raised "
                        f"{type(exc).__name__}: {exc}") from exc


def checked_mapping(value: Any, where: str) -> dict:
    """``value`` as split name -> :class:`Arrays` or Ray Dataset, checked (see :func:`given_datasets`)."""
    if _is_dataset(value):
        value = {"train": value}
    if not isinstance(value, Mapping):
        raise DataError(f"{where}: got a {type(value).__name__}; accepted: a mapping {{'train': ..., 'val': ..., "
                        f"'test': ...}} (train required) or one dataset for training, each {ACCEPTED}")
    unknown = [key for key in value if key not in SPLITS]
    if unknown:
        raise DataError(f"{where}: unknown split {unknown[0]!r}; accepted keys: train (required), val, test")
    if "train" not in value:
        raise DataError(f"{where}: no 'train' dataset (got {', '.join(map(repr, value)) or 'none'}); accepted: a "
                        "mapping with 'train', and optionally 'val' and 'test' (carved out of train by "
                        "data.val_fraction and data.test_fraction when missing)")
    given = {name: _checked_dataset(value[name], f"{where}[{name!r}]") for name in SPLITS if name in value}
    kinds = {name: NUMPY if isinstance(item, Arrays) else RAY_DATA for name, item in given.items()}
    if len(set(kinds.values())) > 1:
        listed = ", ".join(f"{name} {kind}" for name, kind in kinds.items())
        raise DataError(f"{where}: mixes kinds ({listed}); accepted: every split of one kind (arrays become a "
                        "Ray Dataset with ray.data.from_items or from_numpy)")
    return given


def _is_ray_dataset(value: Any) -> bool:
    """A ``ray.data.Dataset``, known without importing Ray (whoever made one has imported it)."""
    ray_data = sys.modules.get("ray.data")
    return ray_data is not None and isinstance(value, ray_data.Dataset)


def _is_dataset(value: Any) -> bool:
    """One dataset rather than a mapping of them: a Ray Dataset or an (x, y) tuple."""
    return _is_ray_dataset(value) or (isinstance(value, tuple) and len(value) == 2)


def _checked_dataset(value: Any, where: str):
    if _is_ray_dataset(value):
        return value
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return checked_arrays(value[0], value[1], where)
    described = f"a {type(value).__name__}" + (f" of {len(value)} items" if isinstance(value, (tuple, list)) else "")
    raise DataError(f"{where}: got {described}; accepted: {ACCEPTED}")


# --- NumPy arrays ------------------------------------------------------------------------------------------


def checked_arrays(x: Any, y: Any, where: str, facts: dict | None = None) -> Arrays:
    """``(x, y)`` checked and shaped as the workers hold them (see the module's docstring); ``facts``
    describe the data as given (default: these arrays)."""
    x, y = _as_array(x, f"{where} x"), _as_array(y, f"{where} y")
    facts = facts or {"kind": NUMPY, "rows": int(len(y)) if y.ndim else 0,
                      "columns": {"x": column_type(x), "y": column_type(y)}}
    labels = checked_labels(y, f"{where} y")
    if x.ndim == 0 or len(x) != len(labels):
        raise DataError(f"{where}: x has {len(x) if x.ndim else 0} rows (shape {x.shape}) and y {len(labels)}; "
                        "accepted: one label per row")
    if not len(labels):
        raise DataError(f"{where}: no rows; accepted: at least one row per given split")
    return Arrays(images_as_stored(x, f"{where} x"), labels, facts)


def _as_array(value: Any, where: str) -> np.ndarray:
    try:
        return np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{where}: cannot be read as an array ({exc}); accepted: {ACCEPTED}") from None


def column_type(array: np.ndarray) -> str:
    """A column's dtype and row shape, as a fingerprint records it: ``uint8[8, 8]``, ``int64[]``."""
    return f"{array.dtype}{list(array.shape[1:])}"


def checked_labels(y: np.ndarray, where: str) -> np.ndarray:
    """Integer class indices (N,) as int64: a column vector (N, 1) is flattened; anything else is refused."""
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(f"{where}: labels of shape {y.shape}; accepted: class indices of shape (N,) (one-hot "
                        "labels: y.argmax(1))")
    if y.dtype.kind not in "iu":
        raise DataError(f"{where}: labels of dtype {y.dtype}; accepted: integer class indices 0..K-1 (e.g. "
                        "y.astype(np.int64); class names: map them to indices)")
    if len(y) and y.min() < 0:
        raise DataError(f"{where}: label {int(y.min())} is negative; accepted: class indices 0..K-1")
    return y.astype(np.int64, copy=False)


def image_shape(row_shape: tuple, where: str) -> tuple[int, int, int]:
    """The (H, W, C) image a row of this shape is taken as: (H, W, C) itself, (H, W) with one channel,
    (F,) features as (1, 1, F)."""
    if len(row_shape) == 3:
        return tuple(int(s) for s in row_shape)  # type: ignore[return-value]
    if len(row_shape) == 2:
        return int(row_shape[0]), int(row_shape[1]), 1
    if len(row_shape) == 1:
        return 1, 1, int(row_shape[0])
    raise DataError(f"{where}: rows of shape {tuple(row_shape)}; accepted: images (H, W, C) or (H, W), or "
                    "features (F,)")


def images_as_stored(x: np.ndarray, where: str) -> np.ndarray:
    """``x`` (N, ...) as (N, H, W, C) uint8 pixels or float32 (what backends take): other integers must be
    pixel values 0..255; floats must be finite, and in [0, 1] for images (features may be any value)."""
    shape = image_shape(x.shape[1:], where)
    features = x.ndim == 2
    if x.dtype == np.uint8:
        return x.reshape(len(x), *shape)
    if x.dtype.kind in "iu":
        if len(x) and (x.min() < 0 or x.max() > 255):
            raise DataError(f"{where}: integer pixels range {x.min()}..{x.max()}; accepted: uint8 pixels 0..255, or "
                            "floats (images in [0, 1])")
        return x.astype(np.uint8).reshape(len(x), *shape)
    if x.dtype.kind != "f":
        raise DataError(f"{where}: dtype {x.dtype}; accepted: uint8 pixels, or floats (images in [0, 1])")
    x = x.astype(np.float32, copy=False)
    if len(x) and not np.isfinite(x).all():
        raise DataError(f"{where}: holds NaN or infinite values; accepted: finite values")
    if not features and len(x) and (x.min() < 0 or x.max() > 1):
        raise DataError(f"{where}: float images range {x.min():g}..{x.max():g}; accepted: floats in [0, 1] (divide "
                        "by 255) or uint8 pixels; features (N, F) may take any values")
    return x.reshape(len(x), *shape)


def plan_arrays(given: dict, data, num_classes: int | None, uri: str | None = None) -> GivenPlan:
    """The splits of NumPy data (:class:`Arrays`), held in memory: a missing ``val`` or ``test`` is carved out
    of train by the spec's fractions (stratified, fixed by ``data.split_seed``), as for a single source."""
    if data.loader == "stream":
        raise DataError("data.loader: got 'stream' for NumPy arrays, which workers hold in memory; accepted: memory "
                        "or auto, or pass ray.data.Datasets to stream")
    train = given["train"]
    fractions = {name: 0.0 if name in given else getattr(data, f"{name}_fraction") for name in ("val", "test")}
    rows = dict(zip(SPLITS, stratified_split(train.y, fractions["val"], fractions["test"], data.split_seed)))
    parts = {name: Split(given[name].x, given[name].y) if name in given and name != "train"
             else Split(train.x[rows[name]], train.y[rows[name]]) for name in SPLITS}
    _check_splits(parts, data)
    classes = _classes(parts, num_classes)
    splits = Splits(parts["train"], parts["val"], parts["test"], classes)
    fingerprint = {name: item.facts for name, item in given.items()}
    info = DataInfo(splits.input_shape, classes, {name: len(parts[name]) for name in SPLITS},
                    description=describe(fingerprint))
    return GivenPlan(info, "memory", fingerprint, uri or fingerprint_uri(fingerprint), arrays=splits)


def _check_splits(parts: dict, data) -> None:
    for name in ("train", "val"):
        if not len(parts[name]):
            fraction = f"data.{name}_fraction is {getattr(data, f'{name}_fraction', 0)}, and " if name == "val" else ""
            raise DataError(f"datasets: the {name} split is empty ({fraction}{len(parts['train'])} training rows); "
                            f"accepted: a '{name}' dataset, or a fraction that leaves rows in every split")
    shapes = {name: split.x.shape[1:] for name, split in parts.items() if len(split)}
    if len(set(shapes.values())) > 1:
        raise DataError(f"datasets: the splits' rows differ in shape ({', '.join(f'{n} {s}' for n, s in shapes.items())}); "
                        "accepted: one shape in every split")


def _classes(parts: dict, num_classes: int | None) -> int:
    largest = max(int(split.y.max()) for split in parts.values() if len(split))
    if num_classes is not None and largest >= num_classes:
        raise DataError(f"model.num_classes: got {num_classes}, but the datasets have label {largest}; accepted: at "
                        f"least {largest + 1}, or null to take it from the data")
    return num_classes or largest + 1


# --- fingerprints: a run resumes only on the data it started with ------------------------------------------


def fingerprint_uri(fingerprint: dict) -> str:
    """``python:<12 hex digits>``: what ``data.uri`` records for a run fed datasets from Python."""
    text = json.dumps(fingerprint, sort_keys=True)
    return PYTHON_URI + hashlib.sha256(text.encode()).hexdigest()[:12]


def describe(fingerprint: dict) -> str:
    """One line: the kind and rows of each split as given."""
    return "from Python: " + "; ".join(f"{name} {facts['kind']} ({facts['rows']} rows)"
                                       for name, facts in fingerprint.items())


def fingerprint_differences(before: dict, now: dict) -> list[str]:
    """How ``now`` differs from ``before``: splits given or missing, kinds, row counts, columns."""
    found = []
    for name in SPLITS:
        old, new = before.get(name), now.get(name)
        if old is None or new is None:
            if old != new:
                found.append(f"{name} {'given now, not before' if old is None else 'given before, missing now'}")
            continue
        for key in ("kind", "rows"):
            if old.get(key) != new.get(key):
                found.append(f"{name} {key} {old.get(key)} before, {new.get(key)} now")
        for column in sorted(old["columns"].keys() | new["columns"].keys()):
            was, is_now = old["columns"].get(column, "absent"), new["columns"].get(column, "absent")
            if was != is_now:
                found.append(f"{name} column {column!r} {was} before, {is_now} now")
    return found


def check_fingerprint(recorded: str | None, fingerprint: dict, run_dir: str, field_name: str) -> None:
    """Refuse to continue the run in ``run_dir`` on data other than the data it started with: ``recorded``
    is the text of its :data:`FINGERPRINT_FILE` (None for a new run)."""
    if recorded is None:
        return
    differences = fingerprint_differences(json.loads(recorded), fingerprint)
    if differences:
        from raykit.spec import SpecError

        raise SpecError([(field_name, f"the run in {run_dir} was trained on other data ({'; '.join(differences)}); "
                                      "accepted: the same datasets as before to resume it (same splits, row counts, "
                                      "columns, dtypes and shapes), or a new run name")])


def choose_columns(columns: list[str], data, where: str) -> tuple[str, str]:
    """The (image, label) columns of a Ray Dataset: ``data.image_column`` and ``data.label_column``, or
    ``x`` and ``y`` when those are the defaults (``image``, ``label``) and absent."""
    chosen = []
    for spec_field, default, fallback in (("image_column", "image", "x"), ("label_column", "label", "y")):
        name = getattr(data, spec_field)
        if name in columns:
            chosen.append(name)
        elif name == default and fallback in columns:
            chosen.append(fallback)
        else:
            also = f" or {fallback!r}" if name == default else ""
            raise DataError(f"{where}: no column {name!r} (data.{spec_field}){also}; its columns: "
                            f"{', '.join(columns) or 'none'}; accepted: set data.{spec_field}, or rename with "
                            f"ds.rename_columns({{...: {name!r}}})")
    return chosen[0], chosen[1]
