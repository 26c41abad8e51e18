"""Where a run's wall time goes: phases timed on the driver and on rank 0, joined into ``result.json``'s
``"timings"`` and the summary's "time:" line.

Phases in different processes are joined by wall-clock marks (``time.time()``): the driver's, the moment the
rank-0 worker process was created, and the moments its loop was entered and left. On one machine they
share a clock; on a cluster they are as close as the nodes' clocks.
"""

from __future__ import annotations

import contextlib
import os
import time

# (key in the timings dict, short name for the summary line, what it covers), in the order a run goes.
PHASES = (
    ("spec_and_plan_s", "spec", "spec and data plan"),
    ("ray_start_s", "Ray start", "Ray start or connect"),
    ("to_worker_process_s", "to worker process", "Train controller, placement group, worker process start"),
    ("worker_setup_s", "worker set-up", "worker set-up (Ray worker, framework import, process group)"),
    ("data_s", "data", "data load"),
    ("model_build_s", "model build", "model, optimizer, initial or resumed weights"),
    ("epochs_s", "epochs", "epochs (training, validation, reports, checkpoints)"),
    ("final_evaluation_s", "test evaluation", "test evaluation of the best checkpoint (rank 0)"),
    ("worker_exit_s", "Train shut-down", "from the loop's end to the driver (Train shut-down)"),
    ("evaluation_task_s", "evaluation task", "test evaluation in a Ray task (when rank 0 could not)"),
    ("outputs_s", "outputs", "metrics CSV, curves PNG, export"),
)


class Stopwatch:
    """Seconds per named phase (a phase entered twice adds up)."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def phase(self, name: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started


def process_started_at() -> float | None:
    """When this process was created (epoch seconds), from /proc; None where there is no /proc."""
    try:
        with open("/proc/self/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        with open("/proc/stat") as system:
            boot = next(float(line.split()[1]) for line in system if line.startswith("btime "))
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError, StopIteration):
        return None


def join_timings(driver: dict, worker: dict | None, fit_started_at: float, fit_ended_at: float) -> dict:
    """The run's phases in seconds (``PHASES`` keys, those known) from the driver's stopwatch and rank 0's
    marks and phases; ``total_s`` is left to the caller."""
    timings = {key: value for key, value in driver.items() if key != "fit_s"}
    worker = worker or {}
    entered, left = worker.get("entered_at"), worker.get("left_at")
    if entered is None or left is None:  # no worker marks (an old checkpoint's resume, a failed return)
        timings["train_run_s"] = driver.get("fit_s", fit_ended_at - fit_started_at)
        return _ordered(timings)
    created = worker.get("process_started_at")
    if created is not None and fit_started_at <= created <= entered:
        timings["to_worker_process_s"] = created - fit_started_at
        timings["worker_setup_s"] = entered - created
    else:  # a reused process, or no /proc: one span from the fit call to the loop
        timings["to_worker_process_s"] = entered - fit_started_at
    timings.update(_loop_phases(worker))
    timings["worker_exit_s"] = max(0.0, fit_ended_at - left)
    return _ordered(timings)


def inline_timings(driver: dict, worker: dict | None) -> dict:
    """The phases of a run trained in the driver process itself (:mod:`raykit.inline`): the driver's and the
    loop's, with no Ray start, worker process or shut-down between them."""
    timings = {key: value for key, value in driver.items() if key != "fit_s"}
    timings.update(_loop_phases(worker or {}))
    return _ordered(timings)


def _loop_phases(worker: dict) -> dict:
    """The phases the training loop itself times (:func:`raykit.engine.fit`, then rank 0's evaluation)."""
    return {key: worker[key] for key in ("data_s", "model_build_s", "epochs_s", "final_evaluation_s") if key in worker}


def _ordered(timings: dict) -> dict:
    order = [key for key, _, _ in PHASES] + ["train_run_s", "total_s"]
    return {key: round(timings[key], 3) for key in sorted(timings, key=lambda k: order.index(k)
                                                            if k in order else len(order))}


def timings_line(timings: dict) -> str:
    """One line for the summary: the larger phases first, each with its seconds."""
    short = {key: name for key, name, _ in PHASES}
    parts = [(value, short.get(key, key.removesuffix("_s").replace("_", " ")))
             for key, value in timings.items() if key != "total_s" and value >= 0.05]
    return ", ".join(f"{name} {value:.1f}s" for value, name in sorted(parts, reverse=True))
