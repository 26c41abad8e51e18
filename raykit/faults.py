"""Fault injection for tests of failure handling: nothing happens unless ``RAYKIT_FAULTS`` is set.

``RAYKIT_FAULTS`` holds a JSON list of rules, each ``{"at": POINT, "action": ACTION, ...}`` with optional
``epoch`` and ``rank`` filters. Points: ``after_report`` (an epoch's report returned), ``mid_epoch``
(halfway through an epoch's batches), ``between_checkpoint_files`` (rank 0 has written a checkpoint's
weights file, not yet the others or the manifest), ``during_upload`` (in rank 0's background upload, while
training goes on: the checkpoint's weights file is in storage, not yet the rest, and Ray has not registered
it). Actions: ``sleep`` (``seconds``), ``exit`` (the process dies at
once, like a killed worker; ``code``), ``raise`` (a RuntimeError), ``enospc`` (an ``OSError`` with errno
ENOSPC, as a full disk raises from a write), ``allocate`` (the process takes ``mb`` MiB more in
128 MiB steps ``step_seconds`` apart, default 0.05, each written so it is resident and Ray's memory monitor sees
usage climb; then it holds it ``seconds``, default 600, so that it is killed for memory rather than going on).
raykit forwards ``RAYKIT_*`` variables to its Ray workers, so a rule set in the driver's environment reaches
them.

A rule with ``once_file`` fires once across restarts (the first process to create that file). Chaos tests
draw many such kills from a seed with :func:`chaos_plan`, so a failing plan can be replayed exactly.
"""

from __future__ import annotations

import errno
import json
import os
import random
import time

ENV = "RAYKIT_FAULTS"


def armed(point: str) -> bool:
    """Whether any rule names ``point`` (for code that takes another path only to stop there)."""
    text = os.environ.get(ENV)
    return bool(text) and any(rule.get("at") == point for rule in json.loads(text))


def inject(point: str, *, epoch: int, rank: int) -> None:
    """Apply every rule for ``point`` that matches this epoch and rank."""
    text = os.environ.get(ENV)
    if not text:
        return
    for rule in json.loads(text):
        if rule.get("at") != point or rule.get("epoch", epoch) != epoch or rule.get("rank", rank) != rank:
            continue
        marker = rule.get("once_file")
        if marker:  # fire once across restarts: the first process to create the file wins
            try:
                os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                continue
        action = rule["action"]
        if action == "sleep":
            time.sleep(float(rule.get("seconds", 60)))
        elif action == "exit":
            os._exit(int(rule.get("code", 1)))
        elif action == "raise":
            raise RuntimeError(f"injected fault at {point}, epoch {epoch}, rank {rank}")
        elif action == "enospc":
            raise OSError(errno.ENOSPC, f"No space left on device (injected at {point}, epoch {epoch})",
                          rule.get("path", point))
        elif action == "allocate":
            allocate(float(rule["mb"]), step_seconds=float(rule.get("step_seconds", 0.05)),
                     hold_seconds=float(rule.get("seconds", 600)))


ALLOCATE_STEP_MB = 128


def allocate(mb: float, *, step_seconds: float, hold_seconds: float) -> None:
    """Take ``mb`` MiB of resident memory in :data:`ALLOCATE_STEP_MB` steps, then hold it ``hold_seconds``.
    Each block is filled with ones: untouched pages would stay unallocated and Ray would see nothing."""
    import numpy as np  # only when a test asks for it: the fault module stays light otherwise

    held = []
    left = int(mb * 2**20)
    while left > 0:
        size = min(left, ALLOCATE_STEP_MB * 2**20)
        held.append(np.ones(size, dtype=np.uint8))
        left -= size
        time.sleep(step_seconds)
    time.sleep(hold_seconds)
    del held


# Where a worker may die with the run still resuming exactly (every one is a point of `inject`): a rank in
# the middle of an epoch, a rank after its report, rank 0 between two files of a checkpoint it is writing,
# rank 0 while Ray's upload thread copies a checkpoint to storage.
KILL_POINTS = ("mid_epoch", "after_report", "between_checkpoint_files", "during_upload")
RANK_ZERO_POINTS = ("between_checkpoint_files", "during_upload")


def chaos_plan(seed: int, *, kills: int, epochs: int, world_size: int, marker_dir: str,
               points: tuple[str, ...] = KILL_POINTS) -> list[dict]:
    """``kills`` worker kills drawn from ``seed`` (point, epoch, rank), each firing once (a marker file in
    ``marker_dir``): the rules for ``RAYKIT_FAULTS``. Every rule fires during a run that restarts after each
    kill: a restart goes back to the last checkpoint, never past an epoch not yet trained, so each
    (epoch, point) is reached again until its rules have fired. The same seed gives the same plan."""
    draw = random.Random(seed)
    rules = []
    for index in range(kills):
        point = draw.choice(points)
        rank = 0 if point in RANK_ZERO_POINTS else draw.randrange(world_size)
        rules.append({"at": point, "epoch": draw.randint(1, epochs), "rank": rank, "action": "exit",
                      "once_file": os.path.join(marker_dir, f"kill-{index}-{point}")})
    return rules


def kills_fired(plan: list[dict]) -> int:
    """How many of ``plan``'s once-only rules have fired (their marker files exist)."""
    return sum(os.path.exists(rule["once_file"]) for rule in plan if "once_file" in rule)
