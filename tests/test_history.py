"""Which checkpoint Ray Train names best, replayed on rank 0 (``Progress.best_checkpoint_epoch``): the
rank-0 test evaluation at the end of a run must pick the checkpoint the driver gets from Ray. Ray's rules
(ray/train/_internal/checkpoint_manager.py and v2's checkpoint manager, Ray 2.60): checkpoints sorted by
score, a tie after the earlier report; the worst beyond ``num_to_keep`` deleted except the latest;
``get_best_checkpoint`` takes the first best of what is left. No Ray here; tests/test_train_ray.py checks
the replay against a real run with tied epochs."""

from __future__ import annotations

import pytest

from raykit.history import Progress


def progress(values: list[float], checkpointed: list[int] | None = None, monitor: str = "val_acc") -> Progress:
    history = [{"epoch": epoch, monitor: value} for epoch, value in enumerate(values, start=1)]
    every_epoch = list(range(1, len(values) + 1))
    return Progress(epoch=len(values), history=history,
                    checkpointed=every_epoch if checkpointed is None else checkpointed)


@pytest.mark.parametrize("values, keep, best", [
    ([0.5, 0.9, 0.7], 2, 2),            # the plain best
    ([0.8, 0.8, 0.8], 2, 2),            # ties: epoch 1 is deleted (ranked below the later 2 and 3), 2 is first
    ([0.8, 0.8, 0.8], 1, 3),            # keep one: each later tie replaces the earlier
    ([0.8, 0.8, 0.8], 3, 1),            # keep all: the earliest of the tied
    ([0.9, 0.5, 0.9, 0.6], 2, 1),       # the latest (0.6) is kept beside the best, never instead of it
    ([0.7, 0.8, 0.6], 1, 2),            # keep one: the latest (0.6) stays as well, the best is still 2
    # NaN sorts first, and get_best_checkpoint's max() keeps its first item when every comparison with
    # NaN is false: Ray names the NaN epoch; the replay does the same
    ([0.7, float("nan"), 0.6], 3, 2),
])
def test_max_mode_picks_what_ray_picks(values, keep, best):
    assert progress(values).best_checkpoint_epoch("val_acc", "max", keep) == best


@pytest.mark.parametrize("values, keep, best", [
    ([0.9, 0.3, 0.5], 2, 2),
    ([0.4, 0.4, 0.4], 2, 2),
    ([0.4, 0.4, 0.4], 3, 1),
])
def test_min_mode_picks_what_ray_picks(values, keep, best):
    assert progress(values, monitor="val_loss").best_checkpoint_epoch("val_loss", "min", keep) == best


def test_only_checkpointed_epochs_compete():
    # every 2 epochs and the last: epoch 3's higher accuracy has no checkpoint
    assert progress([0.5, 0.6, 0.9, 0.7, 0.65], checkpointed=[2, 4, 5]).best_checkpoint_epoch("val_acc", "max", 2) == 4


def test_unknown_when_a_checkpoint_is_missing_from_the_record():
    # a checkpoint written before raykit recorded them: the driver then asks Ray's pick to be evaluated
    assert progress([0.5, 0.6], checkpointed=[]).best_checkpoint_epoch("val_acc", "max", 2) is None
    assert progress([0.5, 0.6], checkpointed=[1, 2, 3]).best_checkpoint_epoch("val_acc", "max", 2) is None


def test_the_record_survives_a_checkpoint_round_trip():
    state = progress([0.5, 0.9], checkpointed=[1, 2]).as_state()
    assert Progress.from_state(state).checkpointed == [1, 2]
    legacy = {key: value for key, value in state.items() if key != "checkpointed"}
    assert Progress.from_state(legacy).checkpointed == []
