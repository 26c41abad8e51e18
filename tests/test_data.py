"""Embedded digits and the stratified splits."""

import numpy as np

from raykit.data import load_splits, stratified_split
from raykit.spec import DataSpec


def test_digits_splits_are_disjoint_cover_everything_and_are_stratified():
    y = np.repeat(np.arange(10), 50)
    train, val, test = stratified_split(y, 0.2, 0.1, seed=3)
    together = np.concatenate([train, val, test])
    assert sorted(together) == list(range(len(y)))
    assert len(set(train) & set(val)) == 0 and len(set(val) & set(test)) == 0
    for label in range(10):
        assert (y[val] == label).sum() == 10 and (y[test] == label).sum() == 5


def test_split_seed_fixes_the_split():
    y = np.repeat(np.arange(3), 20)
    first = stratified_split(y, 0.2, 0.2, seed=1)
    assert all((a == b).all() for a, b in zip(first, stratified_split(y, 0.2, 0.2, seed=1)))
    assert not all(np.array_equal(a, b) for a, b in zip(first, stratified_split(y, 0.2, 0.2, seed=2)))


def test_load_digits_shapes_and_ranges():
    splits = load_splits(DataSpec())
    assert splits.input_shape == (8, 8, 1)
    assert splits.num_classes == 10
    assert len(splits.train) + len(splits.val) + len(splits.test) == 1797
    assert splits.train.x.dtype == np.float32 and 0.0 <= splits.train.x.min() and splits.train.x.max() <= 1.0
    assert splits.train.y.dtype == np.int64


def test_digits_are_read_without_importing_scikit_learn_and_equal_its_load_digits(monkeypatch):
    import subprocess
    import sys

    code = "import sys; from raykit.data import digits; digits.load(); print('sklearn' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
    from sklearn.datasets import load_digits

    from raykit.data import digits

    x, y = digits.load()
    bunch = load_digits()
    assert np.array_equal(x[..., 0], bunch.images.astype(np.float32) / 16.0) and np.array_equal(y, bunch.target)
    monkeypatch.setattr(digits, "_csv_path", lambda: None)  # a scikit-learn laid out otherwise: its loader
    x_fallback, y_fallback = digits.load()
    assert np.array_equal(x_fallback, x) and np.array_equal(y_fallback, y)


def test_shards_cover_a_split_once():
    split = load_splits(DataSpec()).val
    shards = [split.shard(rank, 3) for rank in range(3)]
    assert sum(len(s) for s in shards) == len(split)
    assert sorted(np.concatenate([s.y for s in shards])) == sorted(split.y)
