"""Ray Train's TensorFlow trainer without TensorFlow in the driver or the Train controller.

``ray.train.tensorflow`` imports TensorFlow as it loads (for its checkpoint class), and the controller
unpickles the trainer's backend config from that package: a TF run paid a TensorFlow import in the driver
and another in the controller before any worker started (measured on 2 cores: 5-8 s each, on the path to
the first epoch). The workers need only ``TF_CONFIG`` -- the cluster's worker addresses and their own
index -- which is what Ray's ``_TensorflowBackend.on_start`` sets and what this backend sets the same way.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import ray
from ray.train.backend import Backend, BackendConfig

from raykit.ray.data_parallel import DataParallelTrainer


def _worker_address() -> str:
    """This worker's address and a free port, as ``host:port`` (Ray's own helper, run on the worker)."""
    from ray._common.network_utils import build_address
    from ray.train._internal.utils import get_address_and_port

    return build_address(*get_address_and_port())


def _set_tf_config(worker_addresses: list[str], index: int) -> None:
    """``TF_CONFIG`` for ``MultiWorkerMirroredStrategy``; ``TF_USE_LEGACY_KERAS`` as Ray sets it (raykit
    imports Keras 3 as ``keras``, which that variable does not touch)."""
    os.environ["TF_CONFIG"] = json.dumps({"cluster": {"worker": worker_addresses},
                                          "task": {"type": "worker", "index": index}})
    os.environ["TF_USE_LEGACY_KERAS"] = "1"


class _TensorflowBackend(Backend):
    def on_start(self, worker_group, backend_config) -> None:
        addresses = worker_group.execute(_worker_address)
        ray.get([worker_group.execute_single_async(index, _set_tf_config, worker_addresses=addresses, index=index)
                 for index in range(len(worker_group))])


@dataclass
class TensorflowConfig(BackendConfig):
    """Ray's ``TensorflowConfig``, importable without TensorFlow."""

    @property
    def backend_cls(self):
        return _TensorflowBackend

    @property
    def framework(self):
        from ray.train.v2._internal.util import TrainingFramework

        return TrainingFramework.TENSORFLOW

    def to_dict(self) -> dict:
        return {}


class TensorflowTrainer(DataParallelTrainer):
    """``ray.train.tensorflow.TensorflowTrainer`` (a DataParallelTrainer with the TF backend config), from
    a module that does not import TensorFlow."""

    def __init__(self, train_loop_per_worker, **kwargs):
        super().__init__(train_loop_per_worker, backend_config=TensorflowConfig(), **kwargs)
