"""Datasets given from Python (:mod:`raykit.data.from_python`) on Ray: Ray Datasets inspected and planned
in the driver, then everything handed to the workers.

- NumPy arrays (and Ray Datasets small enough for memory, read once in the driver) go into Ray's object
  store once; every worker reads its node's copy without copying it (nothing is pickled into the trainer
  config but a reference).
- Larger Ray Datasets (or ``data.loader: stream``) stream: ``train`` and ``val`` go to Ray Train, which
  streaming-splits them into disjoint per-worker shards (as :mod:`raykit.ray.data` does for Parquet); the
  training dataset's blocks come in a new seeded order every epoch (``train.seed``), their rows mixed by
  each worker's ``data.shuffle_buffer``; rank 0 reads ``test`` whole for the end-of-run evaluation.
  Streamed datasets must come with their own ``val`` (and ``test``, unless ``data.test_fraction`` is 0):
  carving rows out of a stream would take a global shuffle.

Planning a Ray Dataset reads one row (its columns, dtypes and shape) and its row count; without
``model.num_classes`` a streamed dataset's label column is also read once, for the classes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import ray
import ray.data

from raykit.data import DataInfo, Splits
from raykit.data.errors import DataError
from raykit.data.from_python import (RAY_DATA, GivenPlan, checked_arrays, checked_labels, choose_columns, column_type,
                                     describe, fingerprint_uri, image_shape, images_as_stored, plan_arrays)
from raykit.data.splits import SPLITS
from raykit.ray.data import reshuffled_every_epoch
from raykit.spec import RunSpec

LABEL_BATCH = 65536  # labels read per batch when a streamed dataset's classes are counted


@dataclass
class GivenData:
    """Datasets given from Python as Ray holds them for the workers; picklable (a task or trial takes it).

    ``arrays``: an ObjectRef of the :class:`~raykit.data.Splits` (loader memory); ``datasets``: split ->
    Ray Dataset of ``{"x", "y"}`` rows (loader stream)."""

    info: DataInfo
    arrays: Any = None
    datasets: dict | None = None

    def splits(self) -> Splits:
        return ray.get(self.arrays)

    def batches(self, name: str, batch_size: int):
        """``(x, y)`` batches of split ``name``, x as stored (what :func:`raykit.engine.evaluate_checkpoint`
        reads)."""
        if self.arrays is not None:
            yield from self.splits().batches(name, batch_size)
            return
        dataset = (self.datasets or {}).get(name)
        if dataset is None:
            return
        for batch in dataset.iter_batches(batch_size=batch_size, batch_format="numpy"):
            yield batch["x"], batch["y"]


def plan_datasets(given: dict, spec: RunSpec, uri: str | None = None) -> GivenPlan:
    """The plan of Ray Datasets (split -> Dataset): held in memory when the spec's loader says so (auto:
    when the decoded training split fits ``data.memory_limit_mb``), else streamed."""
    data = spec.data
    given = {name: _quiet(dataset) for name, dataset in given.items()}
    facts, columns, shape = {}, None, None
    for name, dataset in given.items():
        facts[name], chosen, row_shape = _inspect(dataset, data, f"datasets[{name!r}]")
        columns = columns or chosen
        if shape is not None and row_shape != shape:
            raise DataError(f"datasets[{name!r}]: rows of shape {row_shape}, train's are {shape}; accepted: one shape "
                            "in every split")
        shape = shape or row_shape
    decoded = facts["train"]["rows"] * int(np.prod(shape)) * 4
    if data.loader == "memory" or (data.loader == "auto" and decoded <= data.memory_limit_mb * 2**20):
        arrays = {name: _read_whole(dataset, columns, facts[name], f"datasets[{name!r}]")
                  for name, dataset in given.items()}
        return plan_arrays(arrays, data, spec.model.num_classes, uri)
    missing = [name for name in ("val", "test") if name not in given and (name == "val" or data.test_fraction > 0)]
    if missing:
        raise DataError(f"datasets: no {' or '.join(map(repr, missing))} for streamed Ray Datasets, which raykit "
                        "cannot carve out of train without a global shuffle; accepted: pass "
                        f"{' and '.join(map(repr, missing))} too (e.g. from ds.train_test_split(0.15, shuffle=True)), "
                        "data.test_fraction=0 for no test split, or data.loader=memory for data that fits")
    classes = spec.model.num_classes or _count_classes(given, columns[1])
    sizes = {name: facts[name]["rows"] if name in given else 0 for name in SPLITS}
    info = DataInfo(shape, classes, sizes, description=describe(facts))
    return GivenPlan(info, "stream", facts, uri or fingerprint_uri(facts), datasets=dict(given), columns=columns)


def _quiet(dataset):
    """A copy of a given dataset (the user's own is left as it is) that draws no progress bars: off a terminal,
    Ray Data would log one for each of raykit's reads, and each epoch's shards (raykit's epoch line says it)."""
    copy = dataset.copy(dataset, _deep_copy=True)
    copy.context.enable_progress_bars = False
    return copy


def _inspect(dataset, data, where: str) -> tuple[dict, tuple[str, str], tuple]:
    """(facts, (image column, label column), image shape) from one row and the row count."""
    rows = int(dataset.count())
    if rows == 0:
        raise DataError(f"{where}: the ray.data.Dataset has no rows; accepted: at least one row per given split")
    first = dataset.take_batch(1, batch_format="numpy")
    columns = choose_columns(list(first), data, where)
    facts = {"kind": RAY_DATA, "rows": rows, "columns": {name: column_type(np.asarray(v)) for name, v in first.items()}}
    image, label = (np.asarray(first[c]) for c in columns)
    if image.dtype == object:
        raise DataError(f"{where}: column {columns[0]!r} holds {type(image[0]).__name__} values of varying shape or "
                        "type; accepted: numeric arrays of one shape (resize them in a map_batches)")
    checked_labels(label, f"{where} column {columns[1]!r}")
    return facts, columns, image_shape(image.shape[1:], f"{where} column {columns[0]!r}")


def _read_whole(dataset, columns: tuple[str, str], facts: dict, where: str):
    """A Ray Dataset read into NumPy arrays in the driver (for the in-memory loader), in the dataset's order:
    the carved splits and the run's fingerprint must come out the same on a resume."""
    dataset.context.execution_options.preserve_order = True  # raykit's own copy (_quiet)
    xs, ys = [], []
    for batch in dataset.select_columns(list(columns)).iter_batches(batch_size=4096, batch_format="numpy"):
        xs.append(batch[columns[0]])
        ys.append(batch[columns[1]])
    return checked_arrays(np.concatenate(xs), np.concatenate(ys), where, facts)


def _count_classes(given: dict, label: str) -> int:
    """Max label + 1 over every split, reading only the label column (labels checked on the way)."""
    largest = 0
    for name, dataset in given.items():
        for batch in dataset.select_columns([label]).iter_batches(batch_size=LABEL_BATCH, batch_format="numpy"):
            labels = checked_labels(np.asarray(batch[label]), f"datasets[{name!r}] column {label!r}")
            largest = max(largest, int(labels.max(initial=0)))
    return largest + 1


class _XYRows:
    """Picklable batch function: a given dataset's image and label columns -> ``{"x", "y"}`` as the
    workers take them, checked batch by batch (labels beyond the model's classes fail with a clear error)."""

    def __init__(self, columns: tuple[str, str], num_classes: int, name: str):
        self.columns, self.num_classes, self.name = columns, num_classes, name

    def __call__(self, batch: dict) -> dict:
        image, label = self.columns
        where = f"datasets[{self.name!r}] column"
        y = checked_labels(np.asarray(batch[label]), f"{where} {label!r}")
        if len(y) and y.max() >= self.num_classes:
            raise DataError(f"{where} {label!r}: label {int(y.max())} with {self.num_classes} classes (model."
                            f"num_classes); accepted: labels 0..{self.num_classes - 1}")
        return {"x": images_as_stored(np.asarray(batch[image]), f"{where} {image!r}"), "y": y}


def hold(plan: GivenPlan, spec: RunSpec) -> GivenData:
    """Hand ``plan``'s data to Ray: arrays into the object store (the plan lets go of its copy), datasets
    mapped to x/y rows (decoded once into the object store with ``data.stream_cache: on``), train's blocks
    reordered every epoch."""
    if plan.arrays is not None:
        held = GivenData(plan.info, arrays=ray.put(plan.arrays))
        plan.arrays = None
        return held
    classes = spec.model.num_classes or plan.info.num_classes
    datasets = {}
    for name, dataset in plan.datasets.items():
        rows = dataset.select_columns(list(plan.columns)).map_batches(
            _XYRows(plan.columns, classes, name), batch_format="numpy", num_cpus=spec.data.read_cpus)
        rows = rows.materialize() if spec.data.stream_cache == "on" else rows
        # Without it every epoch would stream the same blocks to the same workers in the same order, mixed
        # only within each worker's shuffle buffer.
        datasets[name] = reshuffled_every_epoch(rows, spec.train.seed) if name == "train" else rows
    return GivenData(plan.info, datasets=datasets)
