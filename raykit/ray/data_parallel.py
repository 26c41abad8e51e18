"""The Ray Train trainer every raykit trainer derives from: Ray's ``DataParallelTrainer``, less the
Ray Data machinery for runs that hand it no dataset, and with raykit's handling of Ctrl-C and SIGTERM."""

from __future__ import annotations

import contextlib
from typing import Iterator

import ray
from ray.train.v2._internal.execution.scaling_policy import FixedScalingPolicy
from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer as _RayDataParallelTrainer

from raykit import interrupts


class DataParallelTrainer(_RayDataParallelTrainer):
    """Ray's ``DataParallelTrainer``; with no ``datasets``, its run starts no dataset manager; SIGINT and
    SIGTERM abort the run and raise :class:`raykit.interrupts.Interrupted`.

    Ray's datasets callback starts a DatasetManager actor for every run, datasets or none: one more
    process importing Ray Train and Ray Data while the workers start (measured on 2 cores, 1-epoch
    default job, 4 runs each alternating in one Ray: 21.2 s -> 19.5 s mean). Runs with data in memory
    (and every raykit run not streaming through Ray Data) have no dataset shard to hand out.

    With ``releases_placement_groups`` (``raykit train``: its driver runs one fit at a time), Ray's
    PlacementGroupCleaner is not started either -- a detached actor per run, one more process importing
    Ray Train while the workers start (1-worker digits run in a warm local Ray, 4 runs each alternating:
    6.9 s -> 5.7 s median). Its one job, removing the workers' placement group when the controller dies
    without doing so (killed, out of memory), is done by the driver as the fit returns or raises: the
    placement groups of this job made during the fit and still there are removed. Sweep trials keep Ray's
    cleaner: several trials of one job fit at once there.

    On a cluster that no autoscaler grows, the controller does not ask the AutoscalingCoordinator for
    resources (:class:`FixedScalingWithoutAutoscaler`)."""

    releases_placement_groups = False

    def _create_default_callbacks(self):
        from ray.train.v2._internal.callbacks import DatasetsCallback
        from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback

        dropped = () if self.datasets else (DatasetsCallback,)
        dropped += (PlacementGroupCleanerCallback,) if self.releases_placement_groups else ()
        return [callback for callback in super()._create_default_callbacks() if not isinstance(callback, dropped)]

    def fit(self):
        released = placement_groups_released() if self.releases_placement_groups else contextlib.nullcontext()
        with interrupts.handlers_restored(), released:  # Ray's fit leaves its SIGINT handler installed
            return super().fit()

    def _initialize_and_run_controller(self, **controller_init_kwargs):
        from raykit.ray import cluster  # here, not at the top: the controller imports this module too

        policy = controller_init_kwargs.get("scaling_policy")
        if type(policy) is FixedScalingPolicy and cluster.single_fixed_node():  # nothing would act on requests
            controller_init_kwargs["scaling_policy"] = FixedScalingWithoutAutoscaler(self.scaling_config)
        return super()._initialize_and_run_controller(**controller_init_kwargs)

    def _register_sigint_handler(self, controller) -> None:
        """Ray's handler aborts the run on Ctrl-C, then exits 0 or surfaces the controller's death as a failed
        run (exit 1), and leaves SIGTERM to end the process without any cleanup. raykit's aborts the run on
        either signal (the workers stop; committed checkpoints stay, so the same name resumes) and raises
        ``Interrupted`` here, in the driver's main thread, so the caller's cleanup runs."""
        interrupts.abort_then_raise(lambda: abort(controller))


class FixedScalingWithoutAutoscaler(FixedScalingPolicy):
    """Ray's fixed-size scaling policy, less its requests to an autoscaler, for a cluster that none grows.

    Ray's policy asks the cluster's AutoscalingCoordinator for the workers' resources as the controller
    starts (and every 20 s after): an actor made for it on first use, one more process importing Ray Data,
    which the controller waits for (up to 5 s) before it starts the workers. Where no autoscaler can act
    on the request (one node, no autoscaler: a laptop's local Ray), it only delays the run."""

    def after_controller_start(self, train_run_context) -> None:
        pass

    def _maybe_send_resource_request(self) -> None:
        pass

    def _send_resource_request(self) -> None:
        pass


# How long a Ctrl-C waits for the controller's graceful abort (measured on 2 cores: 3-8 s, workers starting).
ABORT_WAIT_S = 20.0


def abort(controller) -> None:
    """Ask the Ray Train controller to abort its run (it stops the workers). A controller that does not
    answer within ABORT_WAIT_S is killed, and the workers with it (they are its actors), so a busy or hung
    controller cannot keep the driver from exiting after a Ctrl-C."""
    try:
        ray.get(controller.abort.remote(), timeout=ABORT_WAIT_S)
    except ray.exceptions.GetTimeoutError:
        ray.kill(controller, no_restart=True)


@contextlib.contextmanager
def placement_groups_released() -> Iterator[None]:
    """Within the block this job runs one Ray Train fit; at its end, every placement group of this job
    made in the block and not yet removed is removed (the controller removes its own on any orderly end;
    one it left is a dead controller's, holding the workers' CPUs and GPUs until the driver exits)."""
    from ray.util.placement_group import PlacementGroup, placement_group_table

    job = ray.get_runtime_context().get_job_id()  # a placement group's id ends with its job's
    before = set(placement_group_table())
    try:
        yield
    finally:
        for group_id, group in placement_group_table().items():
            if group_id in before or not group_id.endswith(job) or group["state"] == "REMOVED":
                continue
            with contextlib.suppress(Exception):  # removed meanwhile
                ray.util.remove_placement_group(PlacementGroup(ray.PlacementGroupID.from_hex(group_id)))
