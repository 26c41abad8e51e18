"""The order in which samples are trained: one definition for every backend.

The same spec gives the same shuffle and the same per-rank shards whatever the framework, so a torch
run and a TensorFlow run of one spec see the same batches, and a resumed run replays the same epochs.
"""

from __future__ import annotations

import numpy as np


def epoch_order(n: int, seed: int, epoch: int, rank: int, world_size: int) -> np.ndarray:
    """This rank's sample indices for ``epoch`` (int64): a shuffle of ``range(n)`` fixed by
    ``(seed, epoch)``, trimmed to a multiple of ``world_size`` so that every rank gets as many samples
    (data-parallel steps must match), then every ``world_size``-th index from ``rank``."""
    order = np.random.default_rng([seed, epoch]).permutation(n)
    return order[: n - n % world_size][rank::world_size]


def shard_rows(n: int, rank: int, world_size: int) -> np.ndarray:
    """Rank ``rank``'s rows of an evaluation split: every ``world_size``-th from ``rank``, so the shards
    cover the split exactly once (metrics are summed over ranks)."""
    return np.arange(rank, n, world_size)


def batch_indices(order: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """``order`` cut into consecutive batches (the last may be smaller)."""
    return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
