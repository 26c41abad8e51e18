"""``train_loop_per_worker``: a backend's training loop inside a Ray Train worker."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import time
from pathlib import Path

import ray.train

from raykit import engine, faults, storage
from raykit.backends import backend_info
from raykit.checkpoint import read_manifest
from raykit.checks import INPUT_ERRORS
from raykit.resume import CheckpointNames, best_test_metrics, verified_resume
from raykit.session import WorkerSession
from raykit.spec import load_spec
from raykit.timing import process_started_at




def train_loop_per_worker(config: dict) -> dict:
    """Entry point given to TorchTrainer / TensorflowTrainer; ``config`` is ``{"spec": <spec dict>}``."""
    entered_at = time.time()
    spec = load_spec(config["spec"])
    _quiet_ray_report_log()
    _quiet_input_error_tracebacks()
    context = ray.train.get_context()
    _record_placement(config["run_dir"], context)
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None and config.get("resume_from"):  # a new run continuing another run's checkpoint
        checkpoint = ray.train.Checkpoint(config["resume_from"])
    # A remote checkpoint is downloaded to a temporary directory for the duration of the loop.
    local_copy = checkpoint.as_directory() if checkpoint else contextlib.nullcontext(None)
    name = os.path.basename(os.path.normpath(checkpoint.path)) if checkpoint else ""
    names, uploads = CheckpointNames(), Uploads()
    chief = context.get_world_rank() == 0
    with local_copy as resume_dir, verified_resume(resume_dir, name, config["run_dir"], names, chief) as resume_dir:
        session = WorkerSession(
            rank=context.get_world_rank(),
            world_size=context.get_world_size(),
            local_rank=context.get_local_rank(),
            use_gpu=spec.scaling.use_gpu,
            report=functools.partial(_report_to_ray, names, uploads),
            resume_dir=resume_dir,
            run_dir=config["run_dir"],
            prepare_model=model_preparer(backend_info(spec.framework).trainer),
            progress_bar=_progress_bar(config, context.get_world_rank()),
            **_data_fields(spec, config),
        )
        result = engine.fit(spec, session)
    # Until the last checkpoint is in storage and registered: what rank 0 evaluates next, and what the run
    # reports as done. Checkpoint time, so it counts in the epochs' phase.
    result["timings"]["epochs_s"] += uploads.finish()
    if context.get_world_rank() == 0:
        evaluation_started = time.perf_counter()
        epoch = result["best_checkpoint_epoch"]
        result["test_metrics"] = best_test_metrics(spec, config["run_dir"], None if epoch is None else
                                                   names.for_epoch(epoch), config.get("given") or session.splits)
        result["timings"]["final_evaluation_s"] = time.perf_counter() - evaluation_started
    # Marks the driver joins with its own (raykit.timing.join_timings).
    result["timings"].update(entered_at=entered_at, left_at=time.time(), process_started_at=process_started_at())
    return result


class _NoInputErrorTraceback(logging.Filter):
    """Drops Ray's "Error in training function" record (the traceback) of a user-input error: the driver
    reports that error as raykit's one message."""

    def filter(self, record: logging.LogRecord) -> bool:
        # Ray logs it inside the except block that caught the error, so the error is sys.exc_info()'s.
        return not (isinstance(sys.exc_info()[1], INPUT_ERRORS) and "Error in training function" in str(record.msg))


def _quiet_input_error_tracebacks() -> None:
    from ray.train.v2._internal import util as ray_train_util  # it logs a train function's error

    if not any(isinstance(f, _NoInputErrorTraceback) for f in ray_train_util.logger.filters):
        ray_train_util.logger.addFilter(_NoInputErrorTraceback())


def _progress_bar(config: dict, rank: int):
    """Rank 0's bars are drawn on the driver's terminal by Ray's tqdm_ray (a bar drawn in the worker would
    reach the driver as a stream of half-lines); none when the driver is not on a terminal."""
    if not config.get("progress_bar") or rank != 0:
        return None
    from ray.experimental import tqdm_ray

    return lambda total, description: tqdm_ray.tqdm(total=total, desc=description, unit="img")


def _data_fields(spec, config: dict) -> dict:
    """Session fields for data the driver streams through Ray Data, or holds in the object store (arrays
    given from Python); none for data the loop reads into memory itself."""
    given = config.get("given")
    if given is not None and given.arrays is not None:
        return {"splits": given.splits()}  # this node's copy, not copied again
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


def _report_to_ray(names: CheckpointNames, uploads: Uploads, metrics: dict, checkpoint_dir: str | None) -> bool:
    """Report to Ray Train. A checkpoint (rank 0's) goes to storage asynchronously: Ray's upload thread copies
    it while training goes on, registers it once it is all there, then deletes ``checkpoint_dir``, which it
    therefore takes over (returns True; see :class:`~raykit.session.WorkerSession`)."""
    if checkpoint_dir is None:
        ray.train.report(metrics)
        return False
    uploads.one_at_a_time()
    epoch = metrics["epoch"]
    ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(checkpoint_dir),
                     checkpoint_dir_name=names.for_epoch(epoch),
                     checkpoint_upload_mode=ray.train.CheckpointUploadMode.ASYNC,
                     delete_local_checkpoint_after_upload=True,
                     checkpoint_upload_fn=uploads.stopping_halfway(epoch) if faults.armed("during_upload") else None)
    uploads.local = checkpoint_dir
    return True


class Uploads:
    """Rank 0's checkpoints on their way to storage through Ray's upload thread."""

    def __init__(self) -> None:
        self.local: str | None = None  # the last checkpoint handed over; Ray deletes it once uploaded

    def one_at_a_time(self) -> None:
        """Before handing over another checkpoint, wait while the previous one is still uploading: with
        storage slower than an epoch, local copies would otherwise pile up on the worker's disk."""
        if self.local and os.path.exists(self.local):
            self._wait()

    def finish(self) -> float:
        """Wait until every checkpoint handed over is in storage and registered by Ray; the seconds waited.
        A failed upload fails the run meanwhile: Ray hands its error to the controller, which stops the
        workers."""
        if self.local is None:
            return 0.0
        return self._wait()

    def _wait(self) -> float:
        started = time.perf_counter()
        ray.train.get_all_reported_checkpoints(consistency_mode=ray.train.CheckpointConsistencyMode.COMMITTED)
        return time.perf_counter() - started

    def stopping_halfway(self, epoch: int):
        """An upload (Ray's own copy) with the ``during_upload`` fault point in it: the weights file goes to
        storage first, as a copy interrupted there leaves it, then the point, then the whole directory."""
        def upload(checkpoint, dir_name: str):
            ray_storage = ray.train.get_context().get_storage()
            destination = ray_storage.build_checkpoint_path_from_name(dir_name)
            weights = read_manifest(checkpoint.path, verify=False)["weights"]
            ray_storage.storage_filesystem.create_dir(destination)
            with ray_storage.storage_filesystem.open_output_stream(f"{destination}/{weights}") as out:
                out.write((Path(checkpoint.path) / weights).read_bytes())
            faults.inject("during_upload", epoch=epoch, rank=0)
            return ray_storage.persist_current_checkpoint(checkpoint, dir_name)

        return upload


def model_preparer(trainer: str):
    """How the trainer's workers wrap a model for data-parallel training: DDP for TorchTrainer; models of
    the other trainers synchronise themselves (a tf.distribute strategy) or are wrapped by nobody."""
    if trainer == "torch":
        from ray.train.torch import prepare_model

        return prepare_model
    return lambda model: model

