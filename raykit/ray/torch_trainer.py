"""Ray Train's torch trainer without torch in the driver or the Train controller.

``ray.train.torch`` imports torch as it loads, and the controller unpickles the trainer's backend config
(and the train function's context manager) from that package: every torch run paid a torch import in
the Train controller on the path to the first epoch (about 5 s of CPU on 2 cores, measured: the controller
took 5.6 s from its start to its first log line), and the driver paid one more. The process-group set-up
itself only runs on the workers, which import torch anyway: this backend calls Ray's own worker-side
functions (``ray.train.torch.config``) there, in the same order Ray's ``_TorchBackend`` does for Train V2
worker groups. TPU set-up is not carried over (raykit does not place TPU workers).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import ray
from ray.train.backend import Backend, BackendConfig

from raykit.ray.data_parallel import DataParallelTrainer

logger = logging.getLogger(__name__)


def _on_worker(function_name: str, **kwargs):
    """Call one of Ray's worker-side torch set-up functions (imports torch in the worker, not here)."""
    from ray.train.torch import config

    return getattr(config, function_name)(**kwargs)


def _address_and_port() -> tuple[str, int]:
    from ray.train._internal.utils import get_address_and_port

    return get_address_and_port()


def _set_master(addr: str, port: int) -> None:
    os.environ["MASTER_ADDR"] = addr
    os.environ["MASTER_PORT"] = str(port)


def process_group_backend(backend: str | None, resources_per_worker: dict) -> str:
    """The torch.distributed backend: the configured one, else nccl for GPU workers and gloo otherwise
    (what Ray's TorchTrainer picks)."""
    if backend:
        return backend
    return "nccl" if resources_per_worker.get("GPU", 0) > 0 else "gloo"


class _TorchBackend(Backend):
    share_cuda_visible_devices: bool = True

    def on_start(self, worker_group, backend_config: "TorchConfig") -> None:
        backend = process_group_backend(backend_config.backend, worker_group.get_resources_per_worker())
        addr, port = worker_group.execute_single(0, _address_and_port)
        worker_group.execute(_set_master, addr=addr, port=port)
        # torch.distributed wants LOCAL_RANK, RANK, WORLD_SIZE... before init_process_group.
        worker_group.execute(_on_worker, function_name="_set_torch_distributed_env_vars")
        ray.get([worker_group.execute_single_async(
            rank, _on_worker, function_name="_setup_torch_process_group", backend=backend, world_rank=rank,
            world_size=len(worker_group), init_method="env://", timeout_s=backend_config.timeout_s)
            for rank in range(len(worker_group))])

    def on_shutdown(self, worker_group, backend_config) -> None:
        """Each live worker leaves its process group. A worker already dead (killed for memory, or by a
        fault) has nothing left to shut down: Ray's own backend raises its death here, which the controller
        logs as a second failure with a traceback, after the one that ended the run."""
        from ray._private import ray_constants
        from ray.exceptions import OutOfMemoryError, RayActorError
        from ray.train.constants import (DEFAULT_TORCH_PROCESS_GROUP_SHUTDOWN_TIMEOUT_S,
                                         TORCH_PROCESS_GROUP_SHUTDOWN_TIMEOUT_S)

        futures = worker_group.execute_async(_on_worker, function_name="_shutdown_torch",
                                             destroy_process_group=len(worker_group) > 1)
        timeout_s = ray_constants.env_integer(TORCH_PROCESS_GROUP_SHUTDOWN_TIMEOUT_S,
                                              DEFAULT_TORCH_PROCESS_GROUP_SHUTDOWN_TIMEOUT_S)
        done, pending = ray.wait(futures, num_returns=len(futures), timeout=timeout_s)
        if pending:
            logger.warning("Torch process group shutdown timed out after %s seconds", timeout_s)
        for future in done:
            try:
                ray.get(future)
            except (RayActorError, OutOfMemoryError):
                continue


class TorchDeviceContext:
    """Around the train function on each worker: Ray's ``TorchConfigContextManager`` (sets the default CUDA
    device), imported there."""

    def __enter__(self):
        from ray.train.torch.config import TorchConfigContextManager

        TorchConfigContextManager().__enter__()

    def __exit__(self, kind, value, traceback):
        return False


@dataclass
class TorchConfig(BackendConfig):
    """Ray's ``TorchConfig`` (``init_method`` env only), importable without torch."""

    backend: str | None = None
    timeout_s: int = 1800

    @property
    def backend_cls(self):
        return _TorchBackend

    @property
    def train_func_context(self):
        return TorchDeviceContext

    @property
    def framework(self):
        from ray.train.v2._internal.util import TrainingFramework

        return TrainingFramework.TORCH

    def to_dict(self) -> dict:
        return {"backend": self.backend, "init_method": "env", "timeout_s": self.timeout_s}


class TorchTrainer(DataParallelTrainer):
    """``ray.train.torch.TorchTrainer`` (a DataParallelTrainer with the torch backend config) from a module
    that does not import torch."""

    def __init__(self, train_loop_per_worker, **kwargs):
        scaling = kwargs.get("scaling_config")
        backend = "nccl" if scaling is not None and scaling.use_gpu else "gloo"
        super().__init__(train_loop_per_worker, backend_config=TorchConfig(backend=backend), **kwargs)
