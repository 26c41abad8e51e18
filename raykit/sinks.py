"""Where each epoch's metrics go besides ``metrics.csv``: TensorBoard event files and, optionally, MLflow
and Weights & Biases (the trackers: each gets every column of metrics.csv at step = the epoch).

Rank 0 opens one :class:`MetricSinks` per run attempt and writes every epoch through it. TensorBoard
files go to ``<run_dir>/tensorboard/``; when the run directory is a URI (s3://, gs://, ...) they are
written to a local temporary directory and each file is uploaded whole after every epoch, so the store
always holds a readable file. A resumed run starts a new event file (the old ones stay) that tells
TensorBoard to drop the points it is about to write again.

Events are written through tensorboardX's synchronous ``EventsWriter`` (the writer under its
``SummaryWriter``): ``SummaryWriter`` hands events to a background thread and its ``flush()`` does not
wait for them, so a file read or uploaded right after an epoch could lack that epoch.

A tracker's run is named by the run directory (``<storage>/<name>``, or a sweep trial's id) and recorded
in it (``mlflow_run_id``, ``wandb_run_id``), so that a resumed run continues the same tracked run. A
sweep's trials are grouped: :func:`open_sweep_tracking`.

Example::

    sinks = MetricSinks.open(spec, "runs/digits", resumed_after=0)
    sinks.write({"train_loss": 0.9, "val_acc": 0.71, "lr": 1e-3}, step=1)
    sinks.close()

Nothing heavy is imported until a sink is opened.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from raykit import storage
from raykit.history import COLUMNS, csv_columns
from raykit.metrics import is_metric_column

# Epoch metric -> TensorBoard tag.
TAGS = {"train_loss": "train/loss", "train_acc": "train/acc", "val_loss": "val/loss", "val_acc": "val/acc",
        "lr": "lr", "samples_per_s": "throughput/samples_per_s", "epoch_time_s": "time/epoch_s",
        "peak_rss_mb": "memory/peak_rss_mb"}
# What MLflow and W&B get every epoch, under these names, at step = the epoch: metrics.csv's columns (and
# those of train.metrics: raykit.history.csv_columns).
TRACKED = tuple(column for column in COLUMNS if column != "epoch")
TENSORBOARD_DIR = "tensorboard"


class EventFile:
    """One TensorBoard event file, written synchronously. Its name carries the first step and the process
    id, so two attempts that start in the same second (the name's timestamp) never share a file."""

    def __init__(self, logdir: str, first_step: int):
        from tensorboardX.event_file_writer import EventsWriter
        from tensorboardX.proto.event_pb2 import Event, SessionLog

        os.makedirs(logdir, exist_ok=True)
        self.writer = EventsWriter(os.path.join(logdir, "events"), f".e{first_step:06d}.{os.getpid()}")
        if first_step > 1:  # a resumed run: TensorBoard drops earlier files' points from this step on,
            start = SessionLog(status=SessionLog.START)  # which this run is about to write again
            self.writer.write_event(Event(wall_time=time.time(), step=first_step, session_log=start))
        self.writer.flush()

    def write_scalars(self, scalars: dict[str, float], step: int) -> None:
        """One event holding every ``tag: value`` at ``step``, on disk when this returns."""
        from tensorboardX.proto.event_pb2 import Event
        from tensorboardX.proto.summary_pb2 import Summary

        values = [Summary.Value(tag=tag, simple_value=value) for tag, value in scalars.items()]
        self.writer.write_event(Event(wall_time=time.time(), step=step, summary=Summary(value=values)))
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


@dataclass
class Tracker:
    """The open run of one tracking service (MLflow or W&B) on rank 0: :func:`open_tracker` makes one."""

    service: str  # "mlflow" or "wandb"
    run_id: str
    log: Callable[[dict, int], None]  # (metrics, step)
    finish: Callable[[bool], None]  # (succeeded): FINISHED or FAILED


@dataclass
class MetricSinks:
    """The open sinks of one run attempt (on rank 0). Build it with :meth:`open`."""

    run_dir: str
    tensorboard: EventFile | None = None
    local_dir: str | None = None  # the event file's directory when run_dir is a URI (uploaded every epoch)
    trackers: list[Tracker] = field(default_factory=list)  # MLflow and W&B runs, each logging every epoch
    closed: bool = False

    @classmethod
    def open(cls, spec, run_dir: str, resumed_after: int = 0) -> "MetricSinks":
        """Open the sinks ``spec.train`` asks for. ``resumed_after``: the epoch a resumed run continues
        after (0 for a fresh run); points from later epochs already written are replaced."""
        sinks = cls(run_dir=run_dir)
        if spec.train.tensorboard:
            sinks.local_dir = tempfile.mkdtemp(prefix="raykit-tb-") if storage.is_uri(run_dir) else None
            logdir = sinks.local_dir or storage.join(run_dir, TENSORBOARD_DIR)
            sinks.tensorboard = EventFile(logdir, first_step=resumed_after + 1)
        sinks.trackers = open_trackers(spec, run_dir, continue_previous=resumed_after > 0)
        return sinks

    def run_id(self, service: str) -> str | None:
        """The run id of the open ``service`` ("mlflow", "wandb") tracker, or None."""
        return next((tracker.run_id for tracker in self.trackers if tracker.service == service), None)

    def write(self, metrics: dict, step: int) -> None:
        """Record one epoch's metrics at ``step`` (the epoch): TensorBoard gets those of :data:`TAGS` and
        train.metrics' columns (``val_top5_acc`` as ``val/top5_acc``, ``val_acc/cat`` as ``val/acc/cat``),
        the trackers every column of metrics.csv under its own name; absent ones are left out."""
        columns = [key for key in csv_columns([metrics]) if key != "epoch" and metrics.get(key) is not None]
        if self.tensorboard is not None:
            tags = {key: TAGS.get(key) or key.replace("_", "/", 1) for key in columns
                    if key in TAGS or is_metric_column(key)}
            self.tensorboard.write_scalars({tag: float(metrics[key]) for key, tag in tags.items()}, step)
            self._upload()
        tracked = {key: float(metrics[key]) for key in columns}
        for tracker in self.trackers:
            tracker.log(tracked, step)

    def close(self, succeeded: bool = True) -> None:
        """Flush and close everything (once); ends the tracking runs as finished (or failed)."""
        if self.closed:
            return
        self.closed = True
        if self.tensorboard is not None:
            self.tensorboard.close()
            self._upload()
            if self.local_dir:
                shutil.rmtree(self.local_dir, ignore_errors=True)
        for tracker in self.trackers:
            tracker.finish(succeeded)

    def _upload(self) -> None:
        """Copy each local event file whole to ``<run_dir>/tensorboard/`` (only when run_dir is a URI)."""
        if not self.local_dir:
            return
        for name in sorted(os.listdir(self.local_dir)):
            with open(os.path.join(self.local_dir, name), "rb") as handle:
                storage.write_bytes(storage.join(self.run_dir, TENSORBOARD_DIR, name), handle.read())


def open_trackers(spec, run_dir: str, continue_previous: bool = False) -> list[Tracker]:
    """A run in every tracking service ``spec.train`` names, each recorded in ``<run_dir>/<service>_run_id``."""
    wanted = [("mlflow", spec.train.mlflow_tracking_uri), ("wandb", spec.train.wandb_project)]
    return [open_tracker(service, spec, run_dir, continue_previous) for service, on in wanted if on]


_OPEN: dict[str, Tracker] = {}  # trackers this process opened and has not finished, by run id


def open_tracker(service: str, spec, run_dir: str, continue_previous: bool) -> Tracker:
    """Start ``service``'s run for ``run_dir``, named by the directory (the run's name, a trial's id): a
    new one that records the flattened spec as its config, or, with ``continue_previous``, the run an
    earlier attempt recorded in ``<run_dir>/<service>_run_id``. A run this process left open (an attempt
    that died without closing its sinks) is ended as failed first."""
    for stale in [tracker for tracker in _OPEN.values() if tracker.service == service]:
        stale.finish(False)
    previous = _recorded_run(run_dir, service) if continue_previous else None
    start = _start_mlflow if service == "mlflow" else _start_wandb
    tracker = start(spec.train, _run_name(run_dir), previous, None if previous else spec_params(spec))
    _OPEN[tracker.run_id] = tracker
    storage.write_text(storage.join(run_dir, f"{service}_run_id"), tracker.run_id)
    return tracker


def _run_name(run_dir: str) -> str:
    return os.path.basename(run_dir.rstrip("/"))


def _recorded_run(run_dir: str, service: str) -> str | None:
    """The ``service`` run id an earlier attempt recorded in ``run_dir``, or None."""
    location = storage.join(run_dir, f"{service}_run_id")
    return (storage.read_text(location).strip() or None) if storage.exists(location) else None


def open_sweep_tracking(spec, sweep_dir: str) -> tuple[Any, Tracker | None]:
    """``(the spec a sweep's trials start from, the sweep's own MLflow run or None)``. Each trial is one
    run in every tracking service, grouped by the sweep: W&B's group is the sweep's name (unless
    ``train.wandb_group`` says otherwise); MLflow's runs go to the sweep's experiment (the sweep's name
    unless ``train.mlflow_experiment`` is set), nested under a run of the sweep itself that holds the
    sweep spec as params. A resumed sweep continues that run; the caller finishes it."""
    train, name = spec.train, _run_name(sweep_dir)
    experiment = train.mlflow_experiment or name
    sweep_run = _mlflow_sweep_run(spec, sweep_dir, experiment) if train.mlflow_tracking_uri else None
    trials = dataclasses.replace(train, wandb_group=train.wandb_group or name, mlflow_experiment=experiment,
                                 mlflow_parent_run_id=sweep_run.run_id if sweep_run else train.mlflow_parent_run_id)
    return dataclasses.replace(spec, train=trials), sweep_run


def _mlflow_sweep_run(spec, sweep_dir: str, experiment: str) -> Tracker:
    """The sweep's MLflow run (the one recorded in ``<sweep_dir>/mlflow_run_id``, or a new one), made
    through the client API: it is not made the active run of the driver, which is the user's process."""
    from mlflow.entities import Param
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=spec.train.mlflow_tracking_uri)
    run_id = _recorded_run(sweep_dir, "mlflow")
    if run_id:
        client.update_run(run_id, status="RUNNING")
    else:
        found = client.get_experiment_by_name(experiment)
        parent = spec.train.mlflow_parent_run_id
        run_id = client.create_run(found.experiment_id if found else client.create_experiment(experiment),
                                   run_name=_run_name(sweep_dir),
                                   tags={"mlflow.parentRunId": parent} if parent else None).info.run_id
        client.log_batch(run_id, params=[Param(key, str(value)) for key, value in spec_params(spec).items()])
        storage.write_text(storage.join(sweep_dir, "mlflow_run_id"), run_id)
    return Tracker("mlflow", run_id, log=lambda metrics, step: None,  # epochs are the trials' to log
                   finish=lambda succeeded: client.set_terminated(run_id, "FINISHED" if succeeded else "FAILED"))


def _start_mlflow(train, name: str, previous: str | None, config: dict | None) -> Tracker:
    if previous:
        os.environ["MLFLOW_RUN_ID"] = previous  # mlflow.start_run continues it (and removes the variable)
    tags = {"mlflow.parentRunId": train.mlflow_parent_run_id} if train.mlflow_parent_run_id else None
    module = _ray_setup("mlflow", config=config, tracking_uri=train.mlflow_tracking_uri,
                        experiment_name=train.mlflow_experiment or name, run_name=name, tags=tags,
                        create_experiment_if_not_exists=True)
    run_id = module.active_run().info.run_id

    def finish(succeeded: bool) -> None:
        module.end_run("FINISHED" if succeeded else "FAILED")
        _OPEN.pop(run_id, None)

    return Tracker("mlflow", run_id, lambda metrics, step: module.log_metrics(metrics, step=step), finish)


def _start_wandb(train, name: str, previous: str | None, config: dict | None) -> Tracker:
    # A resumed run continues the W&B run by id ("allow"); an epoch W&B already has (a resume from an
    # older checkpoint) keeps W&B's first value, as W&B steps only move forward.
    run = _ray_setup("wandb", config=config, trial_id=previous or secrets.token_hex(6), trial_name=name,
                     project=train.wandb_project, group=train.wandb_group, resume="allow",
                     reinit="create_new")

    def finish(succeeded: bool) -> None:
        run.finish(exit_code=0 if succeeded else 1)
        _OPEN.pop(run.id, None)

    return Tracker("wandb", run.id, lambda metrics, step: run.log(metrics, step=step), finish)


def _ray_setup(service: str, **kwargs):
    """Ray's MLflow or W&B setup (``setup_mlflow``: tracking URI, experiment, run started, params logged;
    ``setup_wandb``: ``wandb.init`` with the config).

    Only raykit/ray/ uses Ray Train or Tune. ``ray.air.integrations`` is neither's API (though it imports
    parts of Tune itself); importing it here, lazily and only when a tracker is asked for, keeps the
    tracking on rank 0 inside the backend loop, which is where the metrics are."""
    if service == "mlflow":
        from ray.air.integrations.mlflow import setup_mlflow as setup
    else:
        from ray.air.integrations.wandb import setup_wandb as setup
    # rank_zero_only=False: the caller already runs on rank 0 alone.
    return setup(**kwargs, rank_zero_only=False)


def spec_params(spec) -> dict:
    """The spec as ``{dotted field path: value}`` (``optim.lr: 0.001``); lists and mappings become JSON
    text, so that they stay one parameter each. ``scaling.env_vars`` gives its names only: values may be
    secrets, and the trackers' params are shown to everyone who can see the run."""
    params = {}

    def walk(node, prefix: str) -> None:
        for item in dataclasses.fields(node):
            value, path = getattr(node, item.name), f"{prefix}{item.name}"
            if path == "scaling.env_vars":
                value = sorted(value)
            if dataclasses.is_dataclass(value):
                walk(value, path + ".")
            else:
                params[path] = json.dumps(value) if isinstance(value, (list, dict)) else value

    walk(spec, "")
    return params
