"""Train / validation / test splits of an in-memory dataset."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from raykit.spec import DataSpec


@dataclass(frozen=True)
class Split:
    """One split: images ``x`` (N, H, W, C) float32 in [0, 1] and labels ``y`` (N,) int64."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)

    def shard(self, rank: int, world_size: int) -> "Split":
        """Rank ``rank``'s disjoint share (every ``world_size``-th sample); shards cover the split once."""
        return Split(self.x[rank::world_size], self.y[rank::world_size])


@dataclass(frozen=True)
class Splits:
    train: Split
    val: Split
    test: Split
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(height, width, channels) of one image."""
        return tuple(self.train.x.shape[1:])  # type: ignore[return-value]

    def get(self, name: str) -> Split:
        if name not in ("train", "val", "test"):
            raise ValueError(f"split: got {name!r}; accepted: train, val, test")
        return getattr(self, name)


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
    return tuple(rng.permutation(np.concatenate(p)) for p in parts)  # type: ignore[return-value]


def load_splits(data: DataSpec) -> Splits:
    """Load the dataset named by ``data.uri`` and split it as the spec says."""
    from raykit.data import digits

    if data.uri != "digits":  # the spec's choices keep this unreachable; guard direct callers
        raise ValueError(f"data.uri: got {data.uri!r}; accepted: digits")
    x, y = digits.load()
    train, val, test = stratified_split(y, data.val_fraction, data.test_fraction, data.split_seed)
    num_classes = int(y.max()) + 1
    return Splits(Split(x[train], y[train]), Split(x[val], y[val]), Split(x[test], y[test]), num_classes)
