"""The Ray Train trainer every raykit trainer derives from: Ray's ``DataParallelTrainer``, less the
Ray Data machinery for runs that hand it no dataset, and with raykit's handling of Ctrl-C and SIGTERM."""

from __future__ import annotations

import ray
from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer as _RayDataParallelTrainer

from raykit import interrupts


class DataParallelTrainer(_RayDataParallelTrainer):
    """Ray's ``DataParallelTrainer``; with no ``datasets``, its run starts no dataset manager; SIGINT and
    SIGTERM abort the run and raise :class:`raykit.interrupts.Interrupted`.

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

    def fit(self):
        with interrupts.handlers_restored():  # Ray's fit leaves its SIGINT handler installed
            return super().fit()

    def _register_sigint_handler(self, controller) -> None:
        """Ray's handler aborts the run on Ctrl-C, then exits 0 or surfaces the controller's death as a failed
        run (exit 1), and leaves SIGTERM to end the process without any cleanup. raykit's aborts the run on
        either signal (the workers stop; committed checkpoints stay, so the same name resumes) and raises
        ``Interrupted`` here, in the driver's main thread, so the caller's cleanup runs."""
        interrupts.abort_then_raise(lambda: abort(controller))


# How long a Ctrl-C waits for the controller's graceful abort (measured on 2 cores: 3-8 s, workers starting).
ABORT_WAIT_S = 20.0


def abort(controller) -> None:
    """Ask the Ray Train controller to abort its run (it stops the workers). A controller that does not
    answer within ABORT_WAIT_S is killed, and the workers with it (they are its actors): on a slow CI
    machine a Ctrl-C while the workers were starting waited on the abort for good."""
    try:
        ray.get(controller.abort.remote(), timeout=ABORT_WAIT_S)
    except ray.exceptions.GetTimeoutError:
        ray.kill(controller, no_restart=True)
