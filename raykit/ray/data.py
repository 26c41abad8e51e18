"""Streamed data: a :class:`~raykit.data.DataPlan`'s chunks read and decoded by Ray Data tasks.

Each split becomes a Ray Dataset of decoded chunks: one read task per chunk (a Parquet row group or a
few hundred image files), run on any CPU node with ``data.read_cpus``, keeping only that split's rows.
Ray Train's ``DataConfig`` streaming-splits them across the training workers, so a worker holds a few
blocks at a time, never the dataset. Blocks carry pixels as stored (uint8 for encoded images, four times
smaller than float32), all the way to the training device, where the backend scales them. The training
split's chunk order is reshuffled every epoch (seeded), beyond each worker's local shuffle buffer, and
workers prefetch :data:`PREFETCH_BATCHES` batches while they train. With ``data.stream_cache`` the splits
are decoded once, before training, into Ray's object store, and every epoch streams those blocks.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import ray.data

from raykit.data import DataPlan, DataInfo
from raykit.data.splits import SplitRows
from raykit.spec import RunSpec

STREAMED = ("train", "val")  # the test split is evaluated by the driver, a chunk at a time
PREFETCH_BATCHES = 4  # batches a worker's iterator readies ahead of the training step


def datasets(plan: DataPlan, spec: RunSpec) -> dict:
    """``{"train": Dataset, "val": Dataset}`` of ``{"x", "y"}`` rows for ``plan``'s streamed splits."""
    # Ray Data draws progress bars for every epoch of every split; raykit's epoch line already says it.
    ray.data.DataContext.get_current().enable_progress_bars = False
    cache = decode_once(plan, spec.data.stream_cache)
    return {name: _split_dataset(plan.splits[name], spec, seed=spec.data.split_seed + index,
                                 reshuffle=name == "train", cache=cache)
            for index, name in enumerate(STREAMED)}


def decode_once(plan: DataPlan, setting: str) -> bool:
    """``data.stream_cache``: whether the streamed splits are decoded once into the object store (auto:
    when their decoded float32 size is at most a quarter of the cluster's object store memory)."""
    if setting != "auto":
        return setting == "on"
    return plan.float32_bytes(*STREAMED) <= ray.cluster_resources().get("object_store_memory", 0) / 4


def _split_dataset(split: SplitRows, spec: RunSpec, seed: int, reshuffle: bool, cache: bool) -> ray.data.Dataset:
    wanted = split.mask()
    chunks = split.chunks(wanted)
    # A seeded chunk order mixes row groups or file groups that were written class by class.
    order = np.random.default_rng(seed).permutation(len(chunks))
    reshuffle_seed = spec.train.seed if reshuffle else None
    if not cache:
        return chunk_dataset(split.source, chunks, wanted, spec.data.read_cpus, order, reshuffle_seed=reshuffle_seed)
    decoded = chunk_dataset(split.source, chunks, wanted, spec.data.read_cpus, order).materialize()
    return decoded if reshuffle_seed is None else reshuffled_every_epoch(decoded, reshuffle_seed)


def reshuffled_every_epoch(blocks: ray.data.Dataset, seed: int) -> ray.data.Dataset:
    """``blocks`` (one per chunk: chunk numbers to read, or a chunk's decoded rows) in a new seeded order at
    every execution, i.e. every epoch: each worker's stream then mixes other chunks each epoch, not only
    rows within its local shuffle buffer. (Before decoding it reorders the tiny chunk numbers, so nothing
    waits for the whole split to be read.)"""
    from ray.data import RandomSeedConfig

    return blocks.randomize_block_order(seed=RandomSeedConfig(seed=seed, reseed_after_execution=True))


class _ChunkReader:
    """Picklable callable: a batch of chunk numbers -> the decoded rows of those chunks in this split."""

    def __init__(self, source, chunks, wanted: np.ndarray):
        self.source, self.chunks, self.wanted = source, chunks, wanted

    def __call__(self, batch: dict) -> dict:
        xs, ys, rows = [], [], []
        for number in batch["chunk"]:
            chunk = self.chunks[int(number)]
            x, y = self.source.read_chunk(chunk)
            keep = self.wanted[chunk.rows]
            xs.append(x[keep])
            ys.append(y[keep])
            rows.append(chunk.rows[keep])
        return {"x": np.concatenate(xs), "y": np.concatenate(ys), "row": np.concatenate(rows)}


def chunk_dataset(source, chunks: list, wanted: np.ndarray, read_cpus: float, order=None,
                  reshuffle_seed: int | None = None) -> ray.data.Dataset:
    """One Ray Data read task per chunk of ``source`` (in ``order``; in a new seeded order every epoch with
    ``reshuffle_seed``), keeping the ``wanted`` rows: ``{"x", "y", "row"}`` blocks of decoded images, labels
    and source row numbers."""
    order = range(len(chunks)) if order is None else order
    items = ray.data.from_items([{"chunk": int(i)} for i in order], override_num_blocks=max(1, len(order)))
    if reshuffle_seed is not None:
        items = reshuffled_every_epoch(items, reshuffle_seed)
    return items.map_batches(_ChunkReader(source, chunks, wanted), batch_size=1, batch_format="numpy",
                             num_cpus=read_cpus)


def info_dict(info: DataInfo) -> dict:
    return dataclasses.asdict(info)


def info_from_dict(values: dict) -> DataInfo:
    return DataInfo(**{**values, "input_shape": tuple(values["input_shape"])})


def worker_streams(spec: RunSpec) -> dict:
    """This worker's streams: split name -> a callable giving one epoch of ``{"x", "y"}`` NumPy batches."""
    import ray.train

    def stream(name: str, shuffle: int):
        shard = ray.train.get_dataset_shard(name)
        return lambda: shard.iter_batches(batch_size=spec.per_worker_batch_size if name == "train" else 1024,
                                          batch_format="numpy", local_shuffle_buffer_size=shuffle or None,
                                          local_shuffle_seed=None, prefetch_batches=PREFETCH_BATCHES)

    return {"train": stream("train", spec.data.shuffle_buffer), "val": stream("val", 0)}
