"""Why a run failed, in the user's terms: a full disk and a worker killed for memory are named as such.

Ray reports a failed Train run as one exception holding each failed worker's error (``worker_failures``,
often wrapped in Ray's task error), or its controller's. :func:`explain` looks through that chain for a
cause raykit can state plainly, with what to do about it, and returns a :class:`RunFailedError` (or None
when it finds none: the caller re-raises Ray's own error). Nothing here imports Ray: the errors are read
by their attributes and messages.
"""

from __future__ import annotations

import contextlib
import errno
import re
from typing import Iterator

from raykit.history import read_history_csv
from raykit.storage import join, read_text

# Fields of the spec that change a worker's memory, named in an out-of-memory report.
MEMORY_FIELDS = ("train.batch_size (per worker: batch_size / scaling.num_workers)",
                 "data.loader: stream (read the data in blocks instead of holding every split in memory)",
                 "scaling.resources_per_worker (e.g. {CPU: 2, memory: 4e9}: fewer workers per node)",
                 "model.name / model.kwargs (a smaller model)", "train.precision: bf16 (halves activations)")
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
_OOM_TEXT = re.compile(r"running low on memory|memory monitor|OutOfMemoryError|killed due to memory pressure",
                       re.IGNORECASE)
# Ray's raylet lists the workers it killed for memory, each "Selected to kill: (Actor(...): job ID=..., task
# name=RayTrainWorker.__init__, ..., pid=344, actual memory used=3.16GB, worker ID=...)", beside those it spared
# (the same entry, unselected); older Rays wrote "(task ID: ..., pid=344, memory used=3.16GB)". Its "GB" are GiB.
_WORKER_MEMORY = re.compile(r"(Selected to kill: )?\([^\n]*?\bpid=(\d+), (?:actual )?memory used=([\d.]+)\s*GB")
# The failed rank's pid: its worker's metadata ("pid=344,") or an actor's death message ("\tpid: 344").
_FAILED_PID = re.compile(r"^\s*pid(?:=|: )(\d+),?\s*$", re.MULTILINE)
_NODE_MEMORY = re.compile(r"Memory on the node \([^)]*\) was ([\d.]+)\s*GB used / ([\d.]+)\s*GB limit")
_THRESHOLD = re.compile(r"exceeded threshold of \d+B \(([\d.]+)% of")


class RunFailedError(RuntimeError):
    """A run failed for a reason raykit names (its message says what happened and what to do); the run
    directory keeps the last complete checkpoint, so the same name resumes from it."""


def explain(error: BaseException, run_name: str, run_dir: str) -> RunFailedError | None:
    """A :class:`RunFailedError` stating why ``error`` (what ``fit`` raised) ended run ``run_name``, or None."""
    causes = list(_causes(error))
    for cause in causes:
        if isinstance(cause, OSError) and cause.errno in _DISK_FULL:
            where = f" ({cause.filename})" if cause.filename else ""
            return RunFailedError(
                f"no space left on the device{where}: {cause.strerror}. The checkpoints already in {run_dir} are "
                f"complete (a checkpoint is registered only once all of it is written); free some space, then "
                f"resume with the same name (name={run_name}).")
    out_of_memory = [str(cause) for cause in causes if _OOM_TEXT.search(str(cause))]
    if out_of_memory:
        killed = next(filter(None, map(_killed_memory, out_of_memory)), "")  # Ray's report, wherever it is whole
        return RunFailedError(
            f"a worker was killed by Ray's memory monitor: its node ran out of memory{killed}{_peak_memory(run_dir)}. "
            f"Fields that lower a worker's memory: {'; '.join(MEMORY_FIELDS)}. The run resumes from its last "
            f"checkpoint with the same name (name={run_name}).")
    return None


@contextlib.contextmanager
def explained(run_name: str, run_dir: str) -> Iterator[None]:
    """An error in the block that :func:`explain` can state plainly is raised as its
    :class:`RunFailedError` (the original as its cause); any other goes on as it is."""
    try:
        yield
    except Exception as error:
        failure = explain(error, run_name, run_dir)
        if failure is None:
            raise
        raise failure from error


def _causes(error: BaseException):
    """``error`` and everything it carries: each worker's failure, causes and contexts, Ray's wrapped
    exceptions (``cause`` of a task error), depth first, each once."""
    seen: set[int] = set()
    stack = [error]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        failures = getattr(current, "worker_failures", None) or {}
        stack.extend(failures.values())
        for attribute in ("controller_failure", "cause", "__cause__", "__context__"):
            value = getattr(current, attribute, None)
            if isinstance(value, BaseException):
                stack.append(value)


def _killed_memory(message: str) -> str:
    """``" (the killed worker, pid N, held X GiB ...)"`` from Ray's out-of-memory message, or "" when it names
    no worker's memory. Of the workers Ray killed, the failed rank's, else the largest: Ray kills restartable
    actors first (a small one of Ray Train's may go with the worker that held the memory)."""
    entries = [(bool(selected), int(pid), float(gib)) for selected, pid, gib in _WORKER_MEMORY.findall(message)]
    killed = [entry for entry in entries if entry[0]] or entries
    if not killed:
        return ""
    failed = {int(pid) for pid in _FAILED_PID.findall(message)}
    _, pid, gib = max(killed, key=lambda entry: (entry[1] in failed, entry[2]))
    node, threshold = _NODE_MEMORY.search(message), _THRESHOLD.search(message)
    on_node = f"; its node had {node.group(1)} GiB used of {node.group(2)} GiB" if node else ""
    if node and threshold:
        on_node += f", above Ray's kill threshold of {threshold.group(1)}% (RAY_memory_usage_threshold)"
    return f" (the killed worker, pid {pid}, held {gib:.2f} GiB when it was killed{on_node})"


def _peak_memory(run_dir: str) -> str:
    """``"; rank 0 peaked at N MiB (epoch E)"`` from the last row of metrics.csv, or "" before any epoch."""
    try:
        rows = read_history_csv(read_text(join(run_dir, "metrics.csv")))
    except (OSError, ValueError):
        return ""
    last = rows[-1] if rows else {}
    if "peak_rss_mb" not in last:
        return ""
    return f"; rank 0's resident memory peaked at {float(last['peak_rss_mb']):,.0f} MiB by epoch {last['epoch']}"
