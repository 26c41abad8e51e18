"""User augmentation ops on the torch backend, a function and a factory: both draw from the run's generator
(the factory's transform through a forked global RNG it seeds), so a resumed run's draws equal an
uninterrupted run's."""

from __future__ import annotations

import pytest
import torch

from raykit.augment import resolve_ops
from raykit.backends.torch.augment import build_augmenter, make_generator
from raykit.engine import fit
from raykit.session import WorkerSession
from tests.backends import user_augment
from tests.backends.test_torch import Recorder, tiny_spec

FUNCTION = "augment.ops=[{op: 'tests.backends.user_augment:random_offsets', amount: 0.2}]"
FACTORY = "augment.ops=[{op: 'tests.backends.user_augment:global_offsets', amount: 0.2}]"  # global RNG draws


def draws_of(tmp_path, *overrides: str, resume_dir: str | None = None) -> tuple[list, Recorder]:
    user_augment.DRAWS.clear()
    recorder = Recorder(tmp_path)
    fit(tiny_spec("model.name=mlp", "train.max_steps_per_epoch=2", *overrides),
        WorkerSession(report=recorder, resume_dir=resume_dir))
    return list(user_augment.DRAWS), recorder


@pytest.mark.parametrize("user_op", [FUNCTION, FACTORY])
def test_a_resumed_runs_user_op_draws_equal_an_uninterrupted_runs(tmp_path, user_op):
    straight, _ = draws_of(tmp_path / "a", "train.epochs=3", user_op)
    _, first = draws_of(tmp_path / "b", "train.epochs=1", user_op)
    resumed, _ = draws_of(tmp_path / "c", "train.epochs=3", user_op, resume_dir=str(first.checkpoints[-1]))
    assert len(straight) == 6 and len(resumed) == 4  # 2 batches an epoch: epochs 2 and 3 after the resume
    for got, expected in zip(resumed, straight[2:]):
        assert torch.equal(got, expected)
    assert not torch.equal(straight[0], straight[2])  # each epoch draws anew
    assert all(bool((d.abs() <= 0.2).all()) for d in straight)  # the op's own parameter reached it


def test_a_factorys_transform_draws_from_a_forked_global_rng_seeded_by_the_op():
    augmenter = build_augmenter(resolve_ops("none", [{"op": "tests.backends.user_augment:global_offsets"}]), 10, 0)
    images, labels = torch.zeros(8, 1, 2, 2), torch.zeros(8, dtype=torch.int64)
    before = torch.random.get_rng_state()
    first = augmenter.train_batch(images, labels, make_generator("cpu", 0, 1, 0))[0]
    assert torch.equal(torch.random.get_rng_state(), before)  # the caller's global RNG is untouched
    assert torch.equal(augmenter.train_batch(images, labels, make_generator("cpu", 0, 1, 0))[0], first)
    assert not torch.equal(augmenter.train_batch(images, labels, make_generator("cpu", 0, 2, 0))[0], first)
