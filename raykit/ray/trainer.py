"""A validated spec -> a Ray Train trainer -> a finished run."""

from __future__ import annotations

import os
import sys

import ray.train

from raykit import storage
from raykit.backends import backend_info
from raykit.checks import INPUT_ERRORS
from raykit.data import DataPlan, plan_data
from raykit.environment import forwarded_environment
from raykit.inline import TrainOutcome
from raykit.ray.cluster import single_fixed_node
from raykit.ray.worker import train_loop_per_worker
from raykit.spec import RunSpec


def scaling_config(spec: RunSpec) -> ray.train.ScalingConfig:
    scaling = spec.scaling
    return ray.train.ScalingConfig(
        num_workers=scaling.num_workers,
        use_gpu=scaling.use_gpu,
        resources_per_worker=dict(scaling.resources_per_worker) or None,
        placement_strategy=scaling.placement_strategy,
    )


def run_config(spec: RunSpec) -> ray.train.RunConfig:
    """Name + storage make the run resumable: Ray V2 continues from the snapshot under that path."""
    return ray.train.RunConfig(
        name=spec.name,
        **_storage_arguments(spec.storage),
        failure_config=ray.train.FailureConfig(max_failures=spec.scaling.max_failures),
        checkpoint_config=ray.train.CheckpointConfig(
            num_to_keep=spec.checkpoint.keep_best,
            checkpoint_score_attribute=spec.checkpoint.monitor,
            checkpoint_score_order=spec.checkpoint.mode,
        ),
        # raykit prints its own per-epoch line; Ray's per-report INFO lines would drown it.
        logging_config=ray.train.LoggingConfig(log_level="WARNING"),
        worker_runtime_env=worker_environment(spec) or None,
    )


def _storage_arguments(location: str) -> dict:
    """A URI's filesystem is built here, in the driver, and handed to Ray: the controller and the workers
    then reach the store (endpoint, region, credentials) exactly as the driver does."""
    if not storage.is_uri(location) or location.startswith("file://"):
        return {"storage_path": location}
    filesystem, path = storage.filesystem(location)
    return {"storage_path": path, "storage_filesystem": filesystem}


def worker_environment(spec: RunSpec) -> dict:
    """``{"env_vars": {...}}`` for Train workers, Tune trials and raykit's Ray tasks, or {}: the driver's
    variables that :data:`raykit.environment.FORWARDED` lists (Ray copies only its own RAY_TRAIN_*
    settings; raykit's files, the trackers and the model caches are all used from the workers), with
    ``scaling.env_vars`` set over them."""
    env_vars = forwarded_environment(spec.scaling.env_vars)
    return {"env_vars": env_vars} if env_vars else {}


def build_trainer(spec: RunSpec, run_dir: str, *, callbacks: list | None = None, resume_from: str | None = None,
                  plan: DataPlan | None = None, given=None, progress_bar: bool = False):
    """The framework's DataParallelTrainer running raykit's worker loop.

    ``resume_from`` (a checkpoint path or URI) starts the run from that checkpoint's full state when the
    run has none of its own yet (a sweep trial continuing from another trial's checkpoint). ``plan`` is
    the data plan (made here when not given): streamed data goes to the workers as Ray Datasets.
    ``given``: data given from Python as Ray holds it (:class:`raykit.ray.given.GivenData`), instead of
    the spec's. ``progress_bar``: rank 0 draws a bar per epoch on the driver's terminal."""
    loop_config = {"spec": spec.to_dict(), "run_dir": run_dir, "resume_from": resume_from,
                   "progress_bar": progress_bar}
    config = run_config(spec)
    if callbacks:
        config.callbacks = [*(config.callbacks or []), *callbacks]
    common = dict(train_loop_config=loop_config, scaling_config=scaling_config(spec), run_config=config)
    if given is not None:
        # A reference to arrays in the object store, or Ray Datasets (rank 0 reads "test" from it): no data copied.
        loop_config["given"] = given
        if given.datasets is not None:
            from raykit.ray import data

            loop_config["data_info"] = data.info_dict(given.info)
            common["datasets"] = {name: given.datasets[name] for name in data.STREAMED}  # sharded per worker
    elif (plan := plan or plan_data(spec.data, spec.model.num_classes)).loader == "stream":
        from raykit.ray import data

        loop_config["data_info"] = data.info_dict(plan.info)
        common["datasets"] = data.datasets(plan, spec)
    return trainer_class(backend_info(spec.framework).trainer)(train_loop_per_worker, **common)


def trainer_class(name: str):
    """The Ray Train trainer a backend names (:attr:`raykit.backends.base.BackendInfo.trainer`)."""
    if name == "torch":
        from raykit.ray.torch_trainer import TorchTrainer  # Ray's, without torch in driver and controller

        return TorchTrainer
    if name == "tensorflow":
        from raykit.ray.tensorflow import TensorflowTrainer  # Ray's, without TensorFlow in driver and controller

        return TensorflowTrainer
    if name == "data_parallel":
        from raykit.ray.data_parallel import DataParallelTrainer

        return DataParallelTrainer
    raise ValueError(f"trainer: got {name!r}; accepted: torch, tensorflow, data_parallel")


HEALTH_CHECK_INTERVAL = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
PREEMPTION_WATCHER = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"
_set_here: set[str] = set()  # the variables below that raykit set (the user's own are never touched)


def set_controller_environment() -> None:
    """Ray Train settings for the next ``fit()``, which Ray copies from this process's environment
    (RAY_TRAIN_* variables) to the controller and the workers; a variable the user set stays as it is.

    - The health-check interval: each report() waits in a queue of one until the controller polls the
      workers, every interval (2 s by default), which would add 2 s to every epoch of a small model.
    - The preemption watcher: on a cluster of one node that no autoscaler grows (a laptop's local Ray)
      there is no other node to lose, yet the watcher is one more actor process per run, importing
      Ray Train beside the workers' own start (about 1-2 s of a run's wall on 2 cores). It stays on
      wherever nodes can come and go."""
    _set_default(HEALTH_CHECK_INTERVAL, "0.25")
    if single_fixed_node():
        _set_default(PREEMPTION_WATCHER, "0")
    elif PREEMPTION_WATCHER in _set_here:  # set for an earlier, single-node cluster
        os.environ.pop(PREEMPTION_WATCHER)
        _set_here.discard(PREEMPTION_WATCHER)


def _set_default(name: str, value: str) -> None:
    if name not in os.environ:
        os.environ[name] = value
        _set_here.add(name)


def fit(spec: RunSpec, run_dir: str, plan: DataPlan | None = None, given=None) -> TrainOutcome:
    """Run training to the end (or raise ``ray.train.TrainingFailedError``); ``plan`` and ``given`` as for
    :func:`build_trainer`."""
    set_controller_environment()
    # A bar only where someone watches: not under `ray job logs`, CI, or a pipe.
    trainer = build_trainer(spec, run_dir, plan=plan, given=given, progress_bar=sys.stdout.isatty())
    trainer.releases_placement_groups = True  # this driver fits one run at a time (see DataParallelTrainer)
    try:
        result = trainer.fit()
    except ray.train.TrainingFailedError as exc:
        error = input_error_of(exc)
        if error is None:
            raise
        raise error from exc  # --debug still shows Ray's error, the worker's traceback in its text
    best = None
    if result.best_checkpoints:
        best = result.get_best_checkpoint(spec.checkpoint.monitor, spec.checkpoint.mode)
    best_metrics = next((m for c, m in result.best_checkpoints if best and c.path == best.path), None)
    return TrainOutcome(
        metrics=result.metrics or {},
        best_checkpoint=_location(best),
        best_metrics=best_metrics,
        worker_return=result.return_value,
    )


def input_error_of(failure: Exception) -> Exception | None:
    """The first user-input error (:data:`raykit.checks.INPUT_ERRORS`) among a failed run's worker errors, or
    None: re-raised as itself, it is raykit's one message (the CLI prints no traceback), not Ray's wrapper
    with the worker's stack."""
    for error in getattr(failure, "worker_failures", {}).values():
        original = getattr(error, "_base_exc", error)  # Ray wraps it with the worker's traceback text
        if isinstance(original, INPUT_ERRORS):
            return original
    return None


def _location(checkpoint) -> str | None:
    if checkpoint is None:
        return None
    filesystem = checkpoint.filesystem
    if filesystem is None or filesystem.type_name == "local":
        return checkpoint.path
    return f"{filesystem.type_name}://{checkpoint.path}"
