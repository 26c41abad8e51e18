"""``train_loop_per_worker``: a backend's training loop inside a Ray Train worker."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import tempfile
import time

import ray.train

from raykit import storage
from raykit import engine
from raykit.backends import backend_info
from raykit.checkpoint import CheckpointError, read_manifest, verified
from raykit.session import WorkerSession
from raykit.spec import load_spec
from raykit.timing import process_started_at


CHECKPOINT_PREFIX = "checkpoint_epoch="  # + the zero-padded epoch: names sort by epoch
logger = logging.getLogger(__name__)


def train_loop_per_worker(config: dict) -> dict:
    """Entry point given to TorchTrainer / TensorflowTrainer; ``config`` is ``{"spec": <spec dict>}``."""
    entered_at = time.time()
    spec = load_spec(config["spec"])
    _quiet_ray_report_log()
    context = ray.train.get_context()
    _record_placement(config["run_dir"], context)
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None and config.get("resume_from"):  # a new run continuing another run's checkpoint
        checkpoint = ray.train.Checkpoint(config["resume_from"])
    # A remote checkpoint is downloaded to a temporary directory for the duration of the loop.
    local_copy = checkpoint.as_directory() if checkpoint else contextlib.nullcontext(None)
    name = os.path.basename(os.path.normpath(checkpoint.path)) if checkpoint else ""
    names = CheckpointNames()
    with local_copy as resume_dir, _verified(resume_dir, name, config["run_dir"], context, names) as resume_dir:
        session = WorkerSession(
            rank=context.get_world_rank(),
            world_size=context.get_world_size(),
            local_rank=context.get_local_rank(),
            use_gpu=spec.scaling.use_gpu,
            report=functools.partial(_report_to_ray, names),
            resume_dir=resume_dir,
            run_dir=config["run_dir"],
            prepare_model=model_preparer(backend_info(spec.framework).trainer),
            progress_bar=_progress_bar(config, context.get_world_rank()),
            **_streamed_data(spec, config),
        )
        result = engine.fit(spec, session)
    if context.get_world_rank() == 0:
        evaluation_started = time.perf_counter()
        result["test_metrics"] = _test_metrics(spec, config["run_dir"], result["best_checkpoint_epoch"], names)
        result["timings"]["final_evaluation_s"] = time.perf_counter() - evaluation_started
    # Marks the driver joins with its own (raykit.timing.join_timings).
    result["timings"].update(entered_at=entered_at, left_at=time.time(), process_started_at=process_started_at())
    return result


def _test_metrics(spec, run_dir: str, epoch: int | None, names: CheckpointNames) -> dict | None:
    """Rank 0's test-split evaluation of the checkpoint the run's ranking names best, here where the
    framework and the data are loaded already (a Ray task afterwards starts a process and imports both
    again: 7-9 s of a 40 s digits run on 2 cores). ``{..., "checkpoint": <directory name>}``; None when
    the best checkpoint is not known here or its evaluation fails -- the driver then evaluates it in a
    task, so an evaluation problem never fails (and restarts) the training."""
    if epoch is None:
        return None
    name = names.for_epoch(epoch)
    try:
        metrics = evaluate_stored_checkpoint(spec, storage.join(run_dir, name), "test")
    except Exception:  # noqa: BLE001 -- reported, and done again by the driver
        logger.warning("raykit: evaluating %s on rank 0 failed; the driver evaluates it instead", name,
                       exc_info=True)
        return None
    return {**metrics, "checkpoint": name}


class CheckpointNames:
    """The directory name of each epoch's checkpoint in this attempt: ``checkpoint_epoch=NNNN``, except for
    an epoch whose checkpoint was found damaged and skipped on resume. Ray still holds that one under the
    plain name and deletes its path when its retention drops it, so the epoch trained again is written
    beside it as ``checkpoint_epoch=NNNN.1`` (``.2``, ... if that too is taken): reusing the path would lose
    the new checkpoint with the old one."""

    def __init__(self) -> None:
        self.skipped: set[str] = set()  # damaged checkpoints Ray registered
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
def _verified(resume_dir: str | None, name: str, run_dir: str, context, names: CheckpointNames):
    """The checkpoint to resume from, checked against its manifest. A truncated or altered latest
    checkpoint is skipped, with a warning, for the newest earlier one that verifies (every rank makes the
    same choice from the same files); none valid means starting over is refused, not done silently.
    ``names`` learns which checkpoints were skipped."""
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
            if context.get_world_rank() == 0:
                logger.warning("raykit: the latest checkpoint is damaged (%s); resuming from %s instead",
                               problem, candidate)
            with verified(directory, manifest):
                yield directory
            return
    raise CheckpointError(f"{problem}; and no earlier checkpoint in {run_dir} verifies, so the run cannot resume")


def evaluate_stored_checkpoint(spec, checkpoint: str, split: str) -> dict:
    """Loss and accuracy of a checkpoint at a path or URI (downloaded for the call when remote) on ``split``."""
    with ray.train.Checkpoint(checkpoint).as_directory() as directory:
        return engine.evaluate_checkpoint(spec, directory, split, use_gpu=spec.scaling.use_gpu)


def checkpoint_dir_name(epoch: int) -> str:
    """The directory name of epoch ``epoch``'s checkpoint under the run directory."""
    return f"{CHECKPOINT_PREFIX}{int(epoch):04d}"


def _progress_bar(config: dict, rank: int):
    """Rank 0's bars are drawn on the driver's terminal by Ray's tqdm_ray (a bar drawn in the worker would
    reach the driver as a stream of half-lines); none when the driver is not on a terminal."""
    if not config.get("progress_bar") or rank != 0:
        return None
    from ray.experimental import tqdm_ray

    return lambda total, description: tqdm_ray.tqdm(total=total, desc=description, unit="img")


def _streamed_data(spec, config: dict) -> dict:
    """Session fields for data the driver streams through Ray Data (none for data loaded in memory)."""
    if "data_info" not in config:
        return {}
    from raykit.ray import data

    return {"streams": data.worker_streams(spec), "data_info": data.info_from_dict(config["data_info"])}


def _record_placement(run_dir: str, context) -> None:
    """``<run>/placement/rank<N>.json``: the node and host each rank runs on (to see what SPREAD or PACK
    did, and to debug a multi-node run)."""
    import json
    import socket

    where = {"rank": context.get_world_rank(), "node_id": ray.get_runtime_context().get_node_id(),
             "node_rank": context.get_node_rank(), "local_rank": context.get_local_rank(),
             "hostname": socket.gethostname()}
    storage.write_text(storage.join(run_dir, "placement", f"rank{where['rank']}.json"), json.dumps(where))


def _quiet_ray_report_log() -> None:
    """Ray logs every report() at INFO with all its metrics, from every rank, past LoggingConfig's level;
    raykit's own rank-0 epoch line says the same once. A filter (not a level, which TensorFlow's logging
    set-up can reset) drops those INFO records. That module names its logger by file path, not module
    name, so the filter goes on the module's own logger object."""
    try:
        from ray.train.v2._internal.execution import context as ray_context

        logger = ray_context.logger
    except (ImportError, AttributeError):  # a Ray version that moved it: the lines stay, nothing breaks
        return
    if not any(isinstance(f, _WarningsOnly) for f in logger.filters):
        logger.addFilter(_WarningsOnly())


class _WarningsOnly(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING


def _report_to_ray(names: CheckpointNames, metrics: dict, checkpoint_dir: str | None) -> None:
    checkpoint = None
    dir_name = None
    if checkpoint_dir is not None:
        checkpoint = ray.train.Checkpoint.from_directory(checkpoint_dir)
        dir_name = names.for_epoch(metrics["epoch"])
    ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=dir_name)


def model_preparer(trainer: str):
    """How the trainer's workers wrap a model for data-parallel training: DDP for TorchTrainer; models of
    the other trainers synchronise themselves (a tf.distribute strategy) or are wrapped by nobody."""
    if trainer == "torch":
        from ray.train.torch import prepare_model

        return prepare_model
    return lambda model: model

