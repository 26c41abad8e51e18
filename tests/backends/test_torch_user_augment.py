"""A user augmentation op on the torch backend: it draws from the run's generator, so a resumed run's draws
equal an uninterrupted run's."""

from __future__ import annotations

import torch

from raykit.engine import fit
from raykit.session import WorkerSession
from tests.backends import user_augment
from tests.backends.test_torch import Recorder, tiny_spec

USER_OP = "augment.ops=[{op: 'tests.backends.user_augment:random_offsets', amount: 0.2}]"


def draws_of(tmp_path, *overrides: str, resume_dir: str | None = None) -> tuple[list, Recorder]:
    user_augment.DRAWS.clear()
    recorder = Recorder(tmp_path)
    fit(tiny_spec("model.name=mlp", "train.max_steps_per_epoch=2", USER_OP, *overrides),
        WorkerSession(report=recorder, resume_dir=resume_dir))
    return list(user_augment.DRAWS), recorder


def test_a_resumed_runs_user_op_draws_equal_an_uninterrupted_runs(tmp_path):
    straight, _ = draws_of(tmp_path / "a", "train.epochs=3")
    _, first = draws_of(tmp_path / "b", "train.epochs=1")
    resumed, _ = draws_of(tmp_path / "c", "train.epochs=3", resume_dir=str(first.checkpoints[-1]))
    assert len(straight) == 6 and len(resumed) == 4  # 2 batches an epoch: epochs 2 and 3 after the resume
    for got, expected in zip(resumed, straight[2:]):
        assert torch.equal(got, expected)
    assert not torch.equal(straight[0], straight[2])  # each epoch draws anew
    assert all(bool((d.abs() <= 0.2).all()) for d in straight)  # the op's own parameter reached it
