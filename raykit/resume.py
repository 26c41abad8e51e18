"""Where a run continues from, what its checkpoints are called, and the test evaluation of the best one:
the parts of a worker's loop that do not need Ray, shared by the Ray Train workers
(:mod:`raykit.ray.worker`) and the inline single-worker path (:mod:`raykit.inline`)."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile

from raykit import engine, storage
from raykit.checkpoint import CheckpointError, read_manifest, verified

CHECKPOINT_PREFIX = "checkpoint_epoch="  # + the zero-padded epoch: names sort by epoch
logger = logging.getLogger(__name__)


def checkpoint_dir_name(epoch: int) -> str:
    """The directory name of epoch ``epoch``'s checkpoint under the run directory."""
    return f"{CHECKPOINT_PREFIX}{int(epoch):04d}"


class CheckpointNames:
    """The directory name of each epoch's checkpoint in this attempt: ``checkpoint_epoch=NNNN``, except for
    an epoch whose checkpoint was found damaged and skipped on resume. The run's checkpoint record (Ray's,
    or the inline path's copy of it) still holds that one under the plain name and deletes its path when
    retention drops it, so the epoch trained again is written beside it as ``checkpoint_epoch=NNNN.1``
    (``.2``, ... if that too is taken): reusing the path would lose the new checkpoint with the old one."""

    def __init__(self) -> None:
        self.skipped: set[str] = set()  # damaged checkpoints the record holds
        self.present: set[str] = set()  # every checkpoint directory name in the run when this attempt began

    def for_epoch(self, epoch: int) -> str:
        name = checkpoint_dir_name(epoch)
        if name not in self.skipped:
            return name
        retry = 1
        while f"{name}.{retry}" in self.present:
            retry += 1
        return f"{name}.{retry}"


@contextlib.contextmanager
def verified_resume(resume_dir: str | None, name: str, run_dir: str, names: CheckpointNames, chief: bool = True):
    """The checkpoint to resume from, checked against its manifest. A truncated or altered latest
    checkpoint is skipped, with a warning (from the ``chief`` rank), for the newest earlier one that
    verifies (every rank makes the same choice from the same files); none valid means starting over is
    refused, not done silently. ``names`` learns which checkpoints were skipped."""
    if resume_dir is None:
        yield None
        return
    try:
        manifest = read_manifest(resume_dir)
    except CheckpointError as exc:
        problem = str(exc)
    else:
        with verified(resume_dir, manifest):  # the backend's restore reads it next: no second hash
            yield resume_dir
        return
    present = storage.list_dirs(run_dir, CHECKPOINT_PREFIX)
    names.present = {os.path.basename(c) for c in present}
    names.skipped = {name}
    for candidate in [c for c in reversed(present) if os.path.basename(c) < name]:
        with tempfile.TemporaryDirectory(prefix="raykit-fallback-") as local:
            directory = candidate if "://" not in candidate else storage.download_dir(candidate, local)
            try:
                manifest = read_manifest(directory)
            except CheckpointError:
                names.skipped.add(os.path.basename(candidate))
                continue
            if chief:
                logger.warning("raykit: the latest checkpoint is damaged (%s); resuming from %s instead",
                               problem, candidate)
            with verified(directory, manifest):
                yield directory
            return
    raise CheckpointError(f"{problem}; and no earlier checkpoint in {run_dir} verifies, so the run cannot resume")


@contextlib.contextmanager
def local_directory(location: str | None):
    """A checkpoint at a path as it is, one at a URI downloaded to a temporary directory for the block;
    None stays None."""
    if location is None or not storage.is_uri(location) or location.startswith("file://"):
        yield location.removeprefix("file://") if location else None
        return
    with tempfile.TemporaryDirectory(prefix="raykit-checkpoint-") as local:
        yield storage.download_dir(location, local)


def evaluate_stored_checkpoint(spec, checkpoint: str, split: str, data=None) -> dict:
    """Loss and accuracy of a checkpoint at a path or URI (downloaded for the call when remote) on ``split``
    of ``spec.data``, or of ``data`` (see :func:`raykit.engine.evaluate_checkpoint`)."""
    with local_directory(checkpoint) as directory:
        return engine.evaluate_checkpoint(spec, directory, split, use_gpu=spec.scaling.use_gpu, data=data)


def best_test_metrics(spec, run_dir: str, name: str | None, data=None) -> dict | None:
    """The test-split evaluation of the checkpoint ``name`` the run's ranking names best, here where the
    framework and the data are loaded already (a Ray task afterwards starts a process and imports both
    again: 7-9 s of a 40 s digits run on 2 cores), on ``data`` held in memory (the splits the loop read,
    or arrays given from Python: not decoded again), else read from ``spec.data``.
    ``{..., "checkpoint": <directory name>}``; None when the best checkpoint is not known here or its
    evaluation fails -- the driver then evaluates it in a task, so an evaluation problem never fails (and
    restarts) the training."""
    if name is None:
        return None
    try:
        metrics = evaluate_stored_checkpoint(spec, storage.join(run_dir, name), "test", data)
    except Exception:  # noqa: BLE001 -- reported, and done again by the driver
        logger.warning("raykit: evaluating %s failed; the driver evaluates it instead", name, exc_info=True)
        return None
    return {**metrics, "checkpoint": name}
