"""The Ray Train trainer every raykit trainer derives from: Ray's ``DataParallelTrainer``, less the
Ray Data machinery for runs that hand it no dataset."""

from __future__ import annotations

from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer as _RayDataParallelTrainer


class DataParallelTrainer(_RayDataParallelTrainer):
    """Ray's ``DataParallelTrainer``; with no ``datasets``, its run starts no dataset manager.

    Ray's datasets callback starts a DatasetManager actor for every run, datasets or none: one more
    process importing Ray Train and Ray Data while the workers start (measured on 2 cores, 1-epoch
    default job, 4 runs each alternating in one Ray: 21.2 s -> 19.5 s mean). Runs with data in memory
    (and every raykit run not streaming through Ray Data) have no dataset shard to hand out."""

    def _create_default_callbacks(self):
        callbacks = super()._create_default_callbacks()
        if self.datasets:
            return callbacks
        from ray.train.v2._internal.callbacks import DatasetsCallback

        return [callback for callback in callbacks if not isinstance(callback, DatasetsCallback)]
