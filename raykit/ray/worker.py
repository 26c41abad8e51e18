"""``train_loop_per_worker``: a backend's training loop inside a Ray Train worker."""

from __future__ import annotations

import contextlib
import logging

import ray.train

from raykit.backends import load_backend_module
from raykit.session import WorkerSession
from raykit.spec import load_spec


def train_loop_per_worker(config: dict) -> dict:
    """Entry point given to TorchTrainer / TensorflowTrainer; ``config`` is ``{"spec": <spec dict>}``."""
    spec = load_spec(config["spec"])
    _quiet_ray_report_log()
    context = ray.train.get_context()
    _record_placement(config["run_dir"], context)
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None and config.get("resume_from"):  # a new run continuing another run's checkpoint
        checkpoint = ray.train.Checkpoint(config["resume_from"])
    # A remote checkpoint is downloaded to a temporary directory for the duration of the loop.
    local_copy = checkpoint.as_directory() if checkpoint else contextlib.nullcontext(None)
    with local_copy as resume_dir:
        session = WorkerSession(
            rank=context.get_world_rank(),
            world_size=context.get_world_size(),
            local_rank=context.get_local_rank(),
            use_gpu=spec.scaling.use_gpu,
            report=_report_to_ray,
            resume_dir=resume_dir,
            run_dir=config["run_dir"],
            prepare_model=_model_preparer(spec.framework),
        )
        return load_backend_module(spec.framework, "loop").fit(spec, session)


def _record_placement(run_dir: str, context) -> None:
    """``<run>/placement/rank<N>.json``: the node and host each rank runs on (to see what SPREAD or PACK
    did, and to debug a multi-node run)."""
    import json
    import socket

    from raykit import storage

    where = {"rank": context.get_world_rank(), "node_id": ray.get_runtime_context().get_node_id(),
             "node_rank": context.get_node_rank(), "local_rank": context.get_local_rank(),
             "hostname": socket.gethostname()}
    storage.write_text(storage.join(run_dir, "placement", f"rank{where['rank']}.json"), json.dumps(where))


def _quiet_ray_report_log() -> None:
    """Ray logs every report() at INFO with all its metrics, from every rank, past LoggingConfig's level;
    raykit's own rank-0 epoch line says the same once. A filter (not a level, which TensorFlow's logging
    set-up can reset) drops those INFO records."""
    logger = logging.getLogger("ray.train.v2._internal.execution.context")
    if not any(isinstance(f, _WarningsOnly) for f in logger.filters):
        logger.addFilter(_WarningsOnly())


class _WarningsOnly(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING


def _report_to_ray(metrics: dict, checkpoint_dir: str | None) -> None:
    checkpoint = None
    dir_name = None
    if checkpoint_dir is not None:
        checkpoint = ray.train.Checkpoint.from_directory(checkpoint_dir)
        dir_name = f"checkpoint_epoch={int(metrics['epoch']):04d}"
    ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=dir_name)


def _model_preparer(framework: str):
    if framework == "torch":
        from ray.train.torch import prepare_model

        return prepare_model
    return lambda model: model

