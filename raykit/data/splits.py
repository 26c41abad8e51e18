"""Train / validation / test splits: drawn from labels alone, then read into memory or streamed.

:func:`plan_data` lists the sources of a spec's ``data`` section and decides which rows belong to which
split (separate URIs, or one source split by fractions, stratified, fixed by a seed) and whether the
data is small enough to hold in memory. :func:`load_splits` reads a plan into arrays; the Ray layer
streams a plan's chunks through Ray Data instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from raykit.data.catalog import refuse_python_data, resolve_named
from raykit.data.errors import DataError
from raykit.data.sources import Chunk, ReadOptions, Source, open_source
from raykit.spec import DataSpec

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Split:
    """One split: images ``x`` (N, H, W, C), float32 in [0, 1] or as stored (uint8 pixels; see
    :meth:`SplitRows.read`), and labels ``y`` (N,) int64."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)

    def shard(self, rank: int, world_size: int) -> "Split":
        """Rank ``rank``'s disjoint share (every ``world_size``-th sample); shards cover the split once."""
        return Split(self.x[rank::world_size], self.y[rank::world_size])


@dataclass(frozen=True)
class Splits:
    """The three splits held in memory, and what a loop or an evaluation must know of them (:attr:`info`)."""

    train: Split
    val: Split
    test: Split
    num_classes: int
    class_names: list | None = None

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(height, width, channels) of one image."""
        return tuple(self.train.x.shape[1:])  # type: ignore[return-value]

    @property
    def info(self) -> "DataInfo":
        """Input shape, classes (their names where the data has them) and split sizes."""
        return DataInfo(self.input_shape, self.num_classes, {name: len(self.get(name)) for name in SPLITS},
                        self.class_names)

    def get(self, name: str) -> Split:
        if name not in SPLITS:
            raise ValueError(f"split: got {name!r}; accepted: train, val, test")
        return getattr(self, name)

    def batches(self, name: str, batch_size: int):
        """``(x, y)`` batches of split ``name``, x as held (what :func:`raykit.engine.evaluate_checkpoint`
        reads)."""
        split = self.get(name)
        for start in range(0, len(split), batch_size):
            yield split.x[start:start + batch_size], split.y[start:start + batch_size]


@dataclass(frozen=True)
class DataInfo:
    """What a training loop must know before it sees a batch (streamed data is never all in one place)."""

    input_shape: tuple[int, int, int]
    num_classes: int
    sizes: dict  # split name -> number of samples
    class_names: list | None = None
    description: str | None = None  # a named dataset's source (raw pixels or a re-encoding): for the run's record


@dataclass
class SplitRows:
    """The rows of one split: ``rows`` of ``source``, in the order they are read into memory."""

    source: Source
    rows: np.ndarray

    def chunks(self, wanted: np.ndarray | None = None) -> list[Chunk]:
        """The source's chunks holding any of these rows (what a streaming reader must read); ``wanted``
        is this split's :meth:`mask` when the caller already has it."""
        wanted = self.mask() if wanted is None else wanted
        return [chunk for chunk in self.source.chunks if wanted[chunk.rows].any()]

    def mask(self) -> np.ndarray:
        wanted = np.zeros(len(self.source), dtype=bool)
        wanted[self.rows] = True
        return wanted

    def read(self, as_stored: bool = False) -> Split:
        """The split's images as float32 in [0, 1], or ``as_stored`` (uint8 pixels stay uint8: a quarter of
        the memory; training loops scale them a batch at a time on their device)."""
        x, y = self.source.read_rows(self.rows)
        return Split(x if as_stored else to_float(x), y)


@dataclass
class DataPlan:
    """Which rows form each split, the input shape and classes, and how to load: memory or stream."""

    splits: dict  # name -> SplitRows
    info: DataInfo
    loader: str  # "memory" or "stream"

    @property
    def uri(self) -> str:
        """The training split's source."""
        return self.splits["train"].source.uri

    @property
    def origin(self) -> str:
        """The training split's source and its format, for the run's first line."""
        return f"{self.uri} ({self.splits['train'].source.format})"

    @property
    def decoded_bytes(self) -> int:
        """Bytes the training split takes decoded as float32 (what an in-memory worker holds on the CPU; on
        a GPU, uint8 pixels stay uint8, a quarter of this)."""
        return self.float32_bytes("train")

    def batches(self, name: str, batch_size: int):
        """``(x, y)`` batches of split ``name`` (see :func:`iter_split`)."""
        return iter_split(self, name, batch_size)

    def float32_bytes(self, *names: str) -> int:
        """Bytes the splits ``names`` take decoded as float32."""
        return sum(len(self.splits[name].rows) for name in names) * int(np.prod(self.info.input_shape)) * 4


def to_float(x: np.ndarray) -> np.ndarray:
    """Images as float32 in [0, 1] (stored uint8 pixels are scaled; floats are taken as they are)."""
    return x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32, copy=False)


def stratified_split(y: np.ndarray, val_fraction: float, test_fraction: float,
                     seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of train/val/test, each class spread over the splits in proportion, fixed by ``seed``."""
    rng = np.random.default_rng(seed)
    parts: tuple[list, list, list] = ([], [], [])
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        n_test = int(round(len(members) * test_fraction))
        n_val = int(round(len(members) * val_fraction))
        parts[2].append(members[:n_test])
        parts[1].append(members[n_test:n_test + n_val])
        parts[0].append(members[n_test + n_val:])
    # Shuffle across classes too, so a shard or a batch is never one class.
    return tuple(rng.permutation(np.concatenate(p)) if p else np.zeros(0, np.int64)  # type: ignore[return-value]
                 for p in parts)


def read_options(data: DataSpec) -> ReadOptions:
    return ReadOptions(label_column=data.label_column, image_column=data.image_column,
                       color_mode=data.color_mode, resize=tuple(data.resize) if data.resize else None)


def plan_data(data: DataSpec, num_classes: int | None = None) -> DataPlan:
    """List the spec's sources and draw the splits; check labels against ``num_classes`` (None: any). A named
    dataset (``data.uri: cifar10``) reads its cached train and test files (:mod:`raykit.data.catalog`)."""
    refuse_python_data(data.uri)
    data, named = resolve_named(data)
    options = read_options(data)
    main = open_source(data.train_uri or data.uri, data.format, options)
    fractions = {"val": data.val_fraction, "test": data.test_fraction}
    separate = {name: getattr(data, f"{name}_uri") for name in ("val", "test")}
    carved = {name: (fractions[name] if not separate[name] else 0.0) for name in ("val", "test")}
    train_rows, val_rows, test_rows = stratified_split(main.labels, carved["val"], carved["test"], data.split_seed)
    splits = {"train": SplitRows(main, train_rows), "val": SplitRows(main, val_rows),
              "test": SplitRows(main, test_rows)}
    for name, uri in separate.items():
        if uri:
            other = open_source(uri, data.format, options)
            if len(other):  # one image decoded, as the main source's below: a bad file fails before Ray
                other.first_image()
            splits[name] = SplitRows(other, np.random.default_rng(data.split_seed).permutation(len(other)))
    _check_splits(splits, main, num_classes)
    shape = tuple(int(s) for s in main.first_image().shape)
    classes = num_classes or max(len(main.class_names or ()), int(max(s.source.labels.max() for s in
                                                                      splits.values() if len(s.source))) + 1)
    info = DataInfo(shape, classes, {name: len(s.rows) for name, s in splits.items()},
                    main.class_names or (named.source.get("class_names") if named else None),
                    named.description if named else None)
    plan = DataPlan(splits, info, "memory")
    plan.loader = _choose_loader(data, plan)
    return plan


def _check_splits(splits: dict, main: Source, num_classes: int | None) -> None:
    for name, split in splits.items():
        if name != "test" and len(split.rows) == 0:
            raise DataError(f"data: the {name} split of {split.source.uri} is empty ({len(split.source)} samples "
                            "in the source); accepted: a source with samples of every class in each split")
        if split.source.class_names != main.class_names and split.source is not main:
            raise DataError(f"data.{name}_uri: classes {split.source.class_names} differ from the training "
                            f"data's {main.class_names}; accepted: the same class names in every split")
        labels = split.source.labels[split.rows]
        if num_classes is not None and len(labels) and labels.max() >= num_classes:
            raise DataError(f"model.num_classes: got {num_classes}, but {split.source.uri} has label "
                            f"{int(labels.max())}; accepted: at least {int(labels.max()) + 1}, or null to take it "
                            "from the data")


def _choose_loader(data: DataSpec, plan: DataPlan) -> str:
    streamable = all(split.source.streamable for split in plan.splits.values())
    if data.loader == "stream" and not streamable:
        raise DataError(f"data.loader: got 'stream' for {data.train_uri or data.uri}, which is read whole "
                        "(digits, .npz); accepted: memory, or convert it to Parquet with `raykit data convert`")
    if data.loader != "auto":
        return data.loader
    big = plan.decoded_bytes > data.memory_limit_mb * 2**20
    return "stream" if big and streamable else "memory"


def load_splits(data: DataSpec, as_stored: bool = False) -> Splits:
    """Read every split of ``data`` into memory (images as float32 in [0, 1], or ``as_stored``)."""
    plan = plan_data(data)
    return splits_of(plan, as_stored)


def splits_of(plan: DataPlan, as_stored: bool = False) -> Splits:
    """A plan's splits read into memory (images as float32 in [0, 1], or ``as_stored``: uint8 stays uint8)."""
    parts = _read_each_source_once(plan.splits, as_stored)
    shapes = {name: split.x.shape[1:] for name, split in parts.items() if len(split)}
    if len(set(shapes.values())) > 1:
        raise DataError(f"data: the splits' images differ in shape ({shapes}); accepted: one shape, or set "
                        "data.resize: [height, width]")
    return Splits(parts["train"], parts["val"], parts["test"], plan.info.num_classes, plan.info.class_names)


def _read_each_source_once(splits: dict, as_stored: bool) -> dict:
    """Split name -> :class:`Split`, reading each source once for all the splits drawn from it: one file
    split by fractions (train and val of ``data.uri``) has its row groups decoded once, not once per split."""
    by_source: dict[int, list[str]] = {}
    for name, rows in splits.items():
        by_source.setdefault(id(rows.source), []).append(name)
    parts = {}
    for names in by_source.values():
        x, y = splits[names[0]].source.read_rows(np.concatenate([splits[name].rows for name in names]))
        start = 0
        for name in names:
            end = start + len(splits[name].rows)
            parts[name] = Split(x[start:end] if as_stored else to_float(x[start:end]), y[start:end])
            start = end
    return parts


def iter_split(plan: DataPlan, name: str, batch_size: int):
    """``(x, y)`` float32 batches of split ``name``, reading one chunk at a time (bounded memory)."""
    split = plan.splits[name]
    if not split.source.streamable:
        data = split.read()
        for start in range(0, len(data), batch_size):
            yield data.x[start:start + batch_size], data.y[start:start + batch_size]
        return
    wanted = split.mask()
    for chunk in split.chunks(wanted):
        x, y = split.source.read_chunk(chunk)
        keep = wanted[chunk.rows]
        x, y = to_float(x[keep]), y[keep]
        for start in range(0, len(y), batch_size):
            yield x[start:start + batch_size], y[start:start + batch_size]
