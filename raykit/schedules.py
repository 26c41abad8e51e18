"""Learning-rate schedules as framework-neutral multipliers of ``optim.lr``, one value per optimizer step.

Torch wraps them in ``LambdaLR``; other backends call them the same way. Each is a function of the step
alone, so a resumed run continues the same curve.
"""

from __future__ import annotations

import math
from typing import Callable

from raykit.registry import Registry
from raykit.spec import FinetuneSpec, OptimSpec

SCHEDULES = Registry("optim.schedule")
Multiplier = Callable[[int], float]


@SCHEDULES.register("constant")
def constant(optim: OptimSpec, steps_per_epoch: int, total_steps: int) -> Multiplier:
    return lambda step: 1.0


@SCHEDULES.register("step")
def step_decay(optim: OptimSpec, steps_per_epoch: int, total_steps: int) -> Multiplier:
    """Multiply by ``gamma`` every ``step_size`` epochs."""
    return lambda step: optim.gamma ** ((step // steps_per_epoch) // optim.step_size)


def _cosine(start: float, end: float, fraction: float) -> float:
    return end + (start - end) * 0.5 * (1 + math.cos(math.pi * min(max(fraction, 0.0), 1.0)))


@SCHEDULES.register("cosine")
def cosine(optim: OptimSpec, steps_per_epoch: int, total_steps: int) -> Multiplier:
    """Cosine from 1 to ``min_lr_fraction`` over the steps after warm-up."""
    warmup = _warmup_steps(optim, steps_per_epoch)
    span = max(total_steps - warmup, 1)
    return lambda step: _cosine(1.0, optim.min_lr_fraction, (step - warmup) / span)


@SCHEDULES.register("onecycle")
def onecycle(optim: OptimSpec, steps_per_epoch: int, total_steps: int) -> Multiplier:
    """One cycle (Smith): cosine up from 1/25 to 1 over the first 30% of steps, then down to
    ``min_lr_fraction`` (or 1/10,000 when that is 0)."""
    peak = max(int(0.3 * total_steps), 1)
    floor = optim.min_lr_fraction or 1e-4

    def multiplier(step: int) -> float:
        if step < peak:
            return _cosine(1 / 25, 1.0, step / peak)
        return _cosine(1.0, floor, (step - peak) / max(total_steps - peak, 1))

    return multiplier


def _warmup_steps(optim: OptimSpec, steps_per_epoch: int) -> int:
    return int(round(optim.warmup_epochs * steps_per_epoch))


def lr_multiplier(optim: OptimSpec, steps_per_epoch: int, total_steps: int) -> Multiplier:
    """The spec's schedule, with linear warm-up over ``optim.warmup_epochs`` multiplied in."""
    base = SCHEDULES.get(optim.schedule)(optim, steps_per_epoch, total_steps)
    warmup = _warmup_steps(optim, steps_per_epoch)
    if not warmup:
        return base
    return lambda step: base(step) * min(1.0, (step + 1) / warmup)


def frozen_at_epoch(frozen: list[str], finetune: FinetuneSpec, epoch: int) -> list[str]:
    """Gradual unfreezing: before epoch ``epoch`` (1-based), one more layer from the top thaws every
    ``unfreeze_every`` epochs. A function of the epoch alone, so a resumed run thaws the same layers."""
    if not finetune.unfreeze_every:
        return frozen
    thawed = (epoch - 1) // finetune.unfreeze_every
    return frozen[: max(len(frozen) - thawed, 0)]
