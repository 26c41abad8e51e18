"""Backend work outside training, run as a Ray task with the resources of one training worker."""

from __future__ import annotations

import ray

from raykit import engine
from raykit.ray.trainer import worker_environment
from raykit.resume import evaluate_stored_checkpoint
from raykit.spec import RunSpec, load_trained_spec


def _task_options(spec: RunSpec) -> dict:
    """One training worker's resources, and the environment Train workers get (worker_environment)."""
    options = {"num_cpus": 1, "num_gpus": 1 if spec.scaling.use_gpu else 0}
    environment = worker_environment(spec)
    if environment:
        options["runtime_env"] = environment
    return options


def _evaluate(spec_dict: dict, checkpoint: str, split: str, data=None) -> dict:
    return evaluate_stored_checkpoint(load_trained_spec(spec_dict), checkpoint, split, data)


def evaluate(spec: RunSpec, checkpoint: str, split: str = "test", data=None) -> dict:
    """Loss, accuracy and ``train.metrics`` of ``checkpoint`` (path or URI) on ``split`` of ``spec.data`` (or
    of ``data``, data given from Python as Ray holds it: :class:`raykit.ray.given.GivenData`), computed on a
    Ray worker."""
    task = ray.remote(_evaluate).options(**_task_options(spec))
    return ray.get(task.remote(spec.to_dict(), checkpoint, split, data))


def _evaluate_split(spec_dict: dict, checkpoint: str, split: str, data=None):
    spec = load_trained_spec(spec_dict)
    from ray.train import Checkpoint

    with Checkpoint(checkpoint).as_directory() as directory:
        return engine.evaluate_split(spec, directory, split, use_gpu=spec.scaling.use_gpu, data=data)


def evaluate_split(spec: RunSpec, checkpoint: str, split: str = "test", data=None):
    """(metrics as :func:`evaluate`'s, true labels, predicted labels) of ``checkpoint`` on ``split`` (of
    ``spec.data``, or ``data`` as for :func:`evaluate`), computed on a Ray worker."""
    task = ray.remote(_evaluate_split).options(**_task_options(spec))
    return ray.get(task.remote(spec.to_dict(), checkpoint, split, data))
