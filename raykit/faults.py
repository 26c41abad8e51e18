"""Fault injection for tests of failure handling: nothing happens unless ``RAYKIT_FAULTS`` is set.

``RAYKIT_FAULTS`` holds a JSON list of rules, each ``{"at": POINT, "action": ACTION, ...}`` with optional
``epoch`` and ``rank`` filters. Points: ``after_report`` (an epoch's report returned), ``mid_epoch``
(halfway through an epoch's batches), ``between_checkpoint_files`` (rank 0 has written a checkpoint's
weights file, not yet the others or the manifest), ``during_upload`` (in rank 0's background upload, while
training goes on: the checkpoint's weights file is in storage, not yet the rest, and Ray has not registered
it). Actions: ``sleep`` (``seconds``), ``exit`` (the process dies at
once, like a killed worker; ``code``), ``raise`` (a RuntimeError). raykit forwards ``RAYKIT_*``
variables to its Ray workers, so a rule set in the driver's environment reaches them.
"""

from __future__ import annotations

import json
import os
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
