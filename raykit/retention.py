"""The checkpoints a run keeps, for runs trained without Ray: Ray Train's own bookkeeping, mirrored.

Ray Train (2.60, V2) records a run's checkpoints in ``<run>/checkpoint_manager_snapshot.json``: every
kept checkpoint with the metrics reported beside it, ranked by ``checkpoint.monitor`` (``mode`` max: higher
is better; NaN ranks lowest; of equal scores the earlier report ranks lower), plus the latest one, which a
resume continues from. After each checkpoint it keeps the best ``checkpoint.keep_best`` and the latest,
writes the snapshot, then deletes the others. :class:`Retention` does the same, in the same file, so a run
trained inline and one trained by a worker group continue each other (Ray reads this snapshot as its own).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from importlib import metadata

from raykit import storage

SNAPSHOT = "checkpoint_manager_snapshot.json"  # ray.train.v2._internal.constants.CHECKPOINT_MANAGER_SNAPSHOT_FILENAME


class Retention:
    """The run's record of checkpoints: ``(directory name, metrics)`` pairs, ranked worst first."""

    def __init__(self, run_dir: str, keep: int | None, monitor: str | None, mode: str):
        self.run_dir, self.keep, self.monitor, self.mode = run_dir, keep, monitor, mode
        self.results: list[tuple[str, dict]] = []
        self.indices: dict[str, int] = {}  # name -> the report that made it (breaks ties)
        self.latest: str | None = None
        self.report_index = 0  # reports so far (with or without a checkpoint), as Ray counts them
        path = storage.join(run_dir, SNAPSHOT)
        if storage.exists(path):
            self._load(json.loads(storage.read_text(path)))

    @classmethod
    def of(cls, run_dir: str, spec) -> "Retention":
        checkpoint = spec.checkpoint
        return cls(run_dir, checkpoint.keep_best, checkpoint.monitor, checkpoint.mode)

    def latest_location(self) -> str | None:
        """Where the latest checkpoint is (what a resume continues from), or None."""
        return storage.join(self.run_dir, self.latest) if self.latest else None

    def count_report(self) -> None:
        """A report without a checkpoint."""
        self.report_index += 1

    def register(self, name: str, metrics: dict) -> None:
        """A checkpoint now complete in the run directory: rank it, keep the best and the latest, write the
        record, then delete what it no longer holds (the record first: a crash between the two leaves an
        extra directory, never a record naming a deleted one)."""
        self.latest = name
        self.indices[name] = self.report_index
        position = 0
        while position < len(self.results) and not self._ranks_above(self.results[position], (name, metrics)):
            position += 1
        self.results.insert(position, (name, metrics))
        self.report_index += 1
        dropped = []
        if self.keep is not None:
            dropped = [r for r in self.results[:-self.keep] if r[0] != self.latest]
            self.results = [r for r in self.results if r not in dropped]
            for gone, _ in dropped:
                del self.indices[gone]
        storage.write_text(storage.join(self.run_dir, SNAPSHOT), json.dumps(self._state()))
        for gone, _ in dropped:
            delete_dir(storage.join(self.run_dir, gone))

    def best(self) -> tuple[str, dict] | None:
        """The best kept checkpoint as ``Result.get_best_checkpoint`` picks it: in rank order (worst first),
        the first with the best value (NaN never), None when none has a value."""
        chosen = None
        for name, metrics in self.results:
            value = metrics.get(self.monitor)
            if value is None or (isinstance(value, float) and math.isnan(value)):
                continue
            if chosen is None or ((value > chosen[1][self.monitor]) if self.mode == "max"
                                  else (value < chosen[1][self.monitor])):
                chosen = (name, metrics)
        return chosen

    def _score(self, metrics: dict) -> tuple[bool, float]:
        value = metrics.get(self.monitor, float("-inf")) if self.monitor else float("-inf")
        value = (1.0 if self.mode == "max" else -1.0) * value
        return (not math.isnan(value), value)

    def _ranks_above(self, held: tuple[str, dict], new: tuple[str, dict]) -> bool:
        """Whether ``held`` goes after ``new`` in the ranking (Ray's _insert_into_sorted_list)."""
        if self.monitor is None:
            return False  # no metric: in order of registration
        held_score, new_score = self._score(held[1]), self._score(new[1])
        return held_score > new_score or (held_score == new_score
                                          and self.indices.get(held[0], 0) > self.indices.get(new[0], 0))

    def _load(self, state: dict) -> None:
        self.results = [(r["checkpoint_dir_name"], r["metrics"]) for r in state["checkpoint_results"]]
        self.indices = {name: index for (name, _), index in zip(self.results, state["checkpoint_report_indices"])}
        latest = state.get("latest_checkpoint_result")
        self.latest = latest["checkpoint_dir_name"] if latest else None
        self.report_index = state["current_report_index"]

    def _state(self) -> dict:
        """The snapshot in Ray's own schema (its CheckpointManager's ``_CheckpointManagerState``)."""
        def result(name: str, metrics: dict) -> dict:
            return {"version": 0, "checkpoint_dir_name": name, "metrics": metrics}

        latest = next((r for r in self.results if r[0] == self.latest), None)
        return {"ray_version": metadata.version("ray"),
                "checkpoint_results": [result(*r) for r in self.results],
                "checkpoint_report_indices": [self.indices[name] for name, _ in self.results],
                "latest_checkpoint_result": result(*latest) if latest else None,
                "pending_training_results": [], "pending_validation_specs": [],
                "current_report_index": self.report_index,
                "validated_checkpoint_dir_names": [], "timed_out_validation_checkpoint_dir_names": [],
                "failed_validation_checkpoint_dir_names": []}


def delete_dir(location: str) -> None:
    """Delete a directory at a path or URI (gone already is fine)."""
    if not storage.is_uri(location) or location.startswith("file://"):
        shutil.rmtree(location.removeprefix("file://"), ignore_errors=True)
        return
    fs, path = storage.filesystem(location)
    try:
        fs.delete_dir(path)
    except FileNotFoundError:
        pass


def commit_dir(local_dir: str, location: str) -> None:
    """Copy the checkpoint ``local_dir`` to ``location`` whole before anyone can see it there: on a local
    disk into a hidden sibling, then one rename; to a URI file by file, the snapshot written afterwards
    being what makes it part of the run."""
    import pyarrow.fs

    if storage.is_uri(location) and not location.startswith("file://"):
        fs, path = storage.filesystem(location)
        fs.create_dir(path, recursive=True)
        pyarrow.fs.copy_files(local_dir, path, source_filesystem=pyarrow.fs.LocalFileSystem(),
                              destination_filesystem=fs)
        return
    target = location.removeprefix("file://")
    parent, name = os.path.split(target)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=parent)  # hidden: no listing sees it
    try:
        os.chmod(staging, 0o755)  # as a directory Ray makes, not mkdtemp's 0700
        shutil.copytree(local_dir, staging, dirs_exist_ok=True)
        shutil.rmtree(target, ignore_errors=True)  # a left-over the record does not hold (an interrupted attempt)
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
