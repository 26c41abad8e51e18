"""Connecting to Ray: the user's own ``ray.init()``, a running cluster, or a new local instance."""

from __future__ import annotations

import logging
import os
import subprocess
import time

import ray
import psutil  # noqa: E402  (Ray's own, from ray/thirdparty_files, which importing ray puts on the path)

from raykit import interrupts
from raykit.spec import RunSpec

logger = logging.getLogger(__name__)


def connect(address: str | None = None) -> None:
    """Make sure this process is connected to Ray.

    Already initialised (the user's ``ray.init()``): nothing to do. ``address`` (or ``RAY_ADDRESS``,
    which ``ray job submit`` sets for its jobs) given: join that cluster. ``address="auto"`` joins a
    cluster started with ``ray start`` on this machine and falls back to a new local instance.
    Otherwise: the Ray a ``ray start`` or ``raykit up`` on this machine left running (its address file
    names it and its processes are alive), with the auth it needs, else a new local instance -- never the
    dead cluster a stale address file names, which Ray's own ``ray.init()`` would try to join, waiting for
    minutes. Leaving (exit, Ctrl-C) only disconnects: a Ray this process did not start keeps running.
    """
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or None  # an empty RAY_ADDRESS means unset
    # ray.init's SIGTERM handler exits 15 at once (kept: the CLI's own raises Interrupted). A signal during
    # a connection to a running Ray waits until it is made (deferred: interrupted there, the driver hung).
    # Not when Ray is started here: the processes it starts would inherit the block, and never stop on SIGTERM.
    with interrupts.kept():
        if address == "auto":
            try:
                with interrupts.deferred():
                    ray.init(address="auto", log_to_driver=True)
                return
            except ConnectionError:
                address = None
        if address is None:
            address = running_local_ray()
            if address:
                use_auth_of_local_ray(address)
        if address:
            with interrupts.deferred():
                ray.init(address=address, log_to_driver=True)
        else:
            ray.init(address="local", log_to_driver=True)
    stop_processes_together(ray._private.worker._global_node)


STOP_GRACE_S = 0.25  # for all of a started Ray's processes together to exit on SIGTERM, before SIGKILL


def stop_processes_together(node) -> None:
    """Make the ``ray.shutdown()`` of a Ray this process started (at exit, or the user's) stop its
    processes together and without waiting in vain. Ray's own sends each SIGTERM in turn and waits up to a
    second for it; on Ray 2.60 the raylet, GCS and monitor do not exit on SIGTERM within that second (nor
    within ten, measured here), so each cost its second before Ray's SIGKILL: 3-4 s between a run's result
    and the command's exit. Here every process but the reaper (which Ray stops last), and every process they
    started (the raylet's agents and workers, which outlive a killed raylet by a minute), gets SIGTERM at
    once and a quarter second in all (the log monitor and dashboard exit at once); what is left is killed,
    Ray's own by its shutdown, which keeps its books as before."""
    if node is None or not node.all_processes:  # joined a running Ray: its processes are not ours to stop
        return
    from ray._private.ray_constants import PROCESS_TYPE_REAPER

    ray_kill_all = node.kill_all_processes

    def kill_all_processes(check_alive: bool = True, allow_graceful: bool = False, wait: bool = False) -> None:
        started = [info.process for kind, infos in list(node.all_processes.items()) if kind != PROCESS_TYPE_REAPER
                   for info in infos if info.process.poll() is None]
        children = _descendants(process.pid for process in started)
        if allow_graceful:
            for process in [*started, *children]:
                _signal_quietly(process.terminate)
            deadline = time.monotonic() + STOP_GRACE_S
            for process in [*started, *children]:
                try:
                    process.wait(timeout=max(0.0, deadline - time.monotonic()))
                except (subprocess.TimeoutExpired, psutil.TimeoutExpired, psutil.Error):
                    pass  # killed below
        ray_kill_all(check_alive=check_alive, allow_graceful=False, wait=wait)
        for child in children:
            _signal_quietly(child.kill)

    node.kill_all_processes = kill_all_processes


def _descendants(pids) -> list:
    """The processes started, at any depth, by the processes ``pids`` (psutil.Process objects)."""
    found = []
    for pid in pids:
        try:
            found += psutil.Process(pid).children(recursive=True)
        except psutil.Error:
            continue
    return found


def _signal_quietly(send) -> None:
    """``process.terminate`` / ``.kill``, for a process that may have exited meanwhile."""
    try:
        send()
    except (psutil.Error, ProcessLookupError):
        pass


def running_local_ray() -> str | None:
    """The address of the Ray that ``ray start`` last started on this machine (``raykit up`` runs it), if it
    is still running; else that of the Ray ``raykit up`` recorded, if that one is."""
    from ray._private.services import find_bootstrap_address

    from raykit.ray import local

    recorded = find_bootstrap_address(None)
    if recorded:
        if local.is_served(recorded):
            return recorded
        logger.warning("raykit: the `ray start` address file names a Ray at %s that is no longer running; not "
                       "joining it", recorded)
    started = local.running()
    return started.address if started else None


def use_auth_of_local_ray(address: str) -> None:
    """Turn this process's token auth on when the local Ray at ``address`` needs it, unless ``RAY_AUTH_MODE``
    says. Ray itself does this only for a cluster it finds without being given an address (token auth when
    this machine has a token), and raykit passes the address it found; a Ray that ``raykit up`` started has
    its mode in its record."""
    if os.environ.get("RAY_AUTH_MODE"):
        return
    from ray._raylet import AuthenticationTokenLoader, Config

    from raykit.ray import local

    started = local.read_record()
    if started is not None and started.address == address:
        needs_token = started.auth_mode == "token"
    else:
        needs_token = AuthenticationTokenLoader.instance().has_token(ignore_auth_mode=True)
    if needs_token:  # (a client's default is no token)
        os.environ["RAY_AUTH_MODE"] = "token"
        Config.initialize("")  # Ray reads the mode from its cached config (as its own switch to token auth does)


def check_fits(spec: RunSpec, streamed: bool = False) -> None:
    """Fail before launching when the cluster can never hold the worker group (Ray would wait forever),
    or, for streamed data, when no CPU is left beside the workers for the Ray Data read tasks (they would
    wait forever for one while the workers wait for data)."""
    available = _max_cluster_resources()
    wanted = worker_resources(spec)
    workers = spec.scaling.num_workers
    for name, amount in wanted.items():
        total = available.get(name, 0)
        if amount * workers > total:
            raise ResourceError(
                f"scaling: {workers} workers x {amount:g} {name} = {amount * workers:g} {name}, but this Ray "
                f"cluster has {total:g} {name}; lower scaling.num_workers or "
                f"scaling.resources_per_worker, or set scaling.use_gpu=false")
    left = available.get("CPU", 0) - wanted.get("CPU", 0) * workers
    if streamed and left < spec.data.read_cpus:
        raise ResourceError(
            f"data.read_cpus: streamed data needs {spec.data.read_cpus:g} CPU for its read tasks beside the "
            f"workers, but {workers} workers x {wanted.get('CPU', 0):g} CPU leave {left:g} of this cluster's "
            f"{available.get('CPU', 0):g}; lower data.read_cpus or scaling.resources_per_worker.CPU, or use "
            "data.loader=memory")


def _max_cluster_resources() -> dict:
    """The most the cluster can ever hold: the autoscaler's limits where it has them, else what is there."""
    return _autoscaler_limits() or ray.cluster_resources()


def _autoscaler_limits() -> dict | None:
    """The autoscaler's resource limits, or None for a cluster without an autoscaler config."""
    try:
        from ray._private.state import state  # the same source Ray Train's own fail-fast check reads

        return state.get_max_resources_from_cluster_config()
    except Exception:  # private API: treated as no autoscaler
        return None


def single_fixed_node() -> bool:
    """Whether the cluster is one node that no autoscaler grows: a laptop's or a test's local Ray, where no
    worker can lose its node without the whole cluster (and the run's driver) going with it."""
    alive = [node for node in ray.nodes() if node.get("Alive")]
    return len(alive) == 1 and not _autoscaler_limits()


def worker_resources(spec: RunSpec) -> dict:
    """What each Train worker reserves, as Ray computes it: the spec's resources_per_worker, else 1 CPU,
    or 1 GPU (and no CPU) with use_gpu."""
    wanted = dict(spec.scaling.resources_per_worker)
    if not wanted:
        return {"GPU": 1} if spec.scaling.use_gpu else {"CPU": 1}
    if spec.scaling.use_gpu:
        wanted.setdefault("GPU", 1)
    return wanted


class ResourceError(RuntimeError):
    """The spec asks for more than the cluster has."""
