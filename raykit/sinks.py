"""Where each epoch's metrics go besides ``metrics.csv``: TensorBoard event files and, optionally, MLflow.

Rank 0 opens one :class:`MetricSinks` per run attempt and writes every epoch through it. TensorBoard
files go to ``<run_dir>/tensorboard/``; when the run directory is a URI (s3://, gs://, ...) they are
written to a local temporary directory and each file is uploaded whole after every epoch, so the store
always holds a readable file. A resumed run starts a new event file (the old ones stay) that tells
TensorBoard to drop the points it is about to write again.

Events are written through tensorboardX's synchronous ``EventsWriter`` (the writer under its
``SummaryWriter``): ``SummaryWriter`` hands events to a background thread and its ``flush()`` does not
wait for them, so a file read or uploaded right after an epoch could lack that epoch.

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
import shutil
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from raykit import storage

# Epoch metric -> TensorBoard tag. MLflow gets the same metrics under their raykit names (metrics.csv's).
TAGS = {"train_loss": "train/loss", "train_acc": "train/acc", "val_loss": "val/loss", "val_acc": "val/acc",
        "lr": "lr", "samples_per_s": "throughput/samples_per_s", "epoch_time_s": "time/epoch_s",
        "peak_rss_mb": "memory/peak_rss_mb"}
TENSORBOARD_DIR = "tensorboard"
MLFLOW_RUN_FILE = "mlflow_run_id"  # in the run directory: the MLflow run a resumed run continues


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
class MetricSinks:
    """The open sinks of one run attempt (on rank 0). Build it with :meth:`open`."""

    run_dir: str
    tensorboard: EventFile | None = None
    local_dir: str | None = None  # the event file's directory when run_dir is a URI (uploaded every epoch)
    mlflow: Any = None  # the mlflow module with this run active, or None
    mlflow_run_id: str | None = None
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
        if spec.train.mlflow_tracking_uri:
            sinks.mlflow, sinks.mlflow_run_id = _open_mlflow(spec, run_dir, resumed_after)
        return sinks

    def write(self, metrics: dict, step: int) -> None:
        """Record one epoch's metrics (those of :data:`TAGS` that are present) at ``step`` (the epoch)."""
        present = {key: float(metrics[key]) for key in TAGS if metrics.get(key) is not None}
        if self.tensorboard is not None:
            self.tensorboard.write_scalars({TAGS[key]: value for key, value in present.items()}, step)
            self._upload()
        if self.mlflow is not None:
            self.mlflow.log_metrics(present, step=step)

    def close(self) -> None:
        """Flush and close everything (once); ends the MLflow run as finished."""
        if self.closed:
            return
        self.closed = True
        if self.tensorboard is not None:
            self.tensorboard.close()
            self._upload()
            if self.local_dir:
                shutil.rmtree(self.local_dir, ignore_errors=True)
        if self.mlflow is not None:
            self.mlflow.end_run()
            _ACTIVE_MLFLOW_RUNS.discard(self.mlflow_run_id)

    def _upload(self) -> None:
        """Copy each local event file whole to ``<run_dir>/tensorboard/`` (only when run_dir is a URI)."""
        if not self.local_dir:
            return
        for name in sorted(os.listdir(self.local_dir)):
            with open(os.path.join(self.local_dir, name), "rb") as handle:
                storage.write_bytes(storage.join(self.run_dir, TENSORBOARD_DIR, name), handle.read())


_ACTIVE_MLFLOW_RUNS: set[str] = set()  # runs this process started and has not ended


def _open_mlflow(spec, run_dir: str, resumed_after: int):
    """``(mlflow module, run id)`` with a run active: a new one that logs the flattened spec as params,
    or, when resuming, the run the earlier attempt recorded in ``<run_dir>/mlflow_run_id``."""
    import mlflow

    stale = mlflow.active_run()
    if stale is not None and stale.info.run_id in _ACTIVE_MLFLOW_RUNS:  # an attempt here that died
        mlflow.end_run("FAILED")
        _ACTIVE_MLFLOW_RUNS.discard(stale.info.run_id)
    previous = _previous_mlflow_run(run_dir) if resumed_after else None
    if previous:
        os.environ["MLFLOW_RUN_ID"] = previous  # mlflow.start_run continues it (and removes the variable)
    name = spec.name or os.path.basename(run_dir.rstrip("/"))
    module = _ray_setup_mlflow(config=None if previous else spec_params(spec),
                               tracking_uri=spec.train.mlflow_tracking_uri,
                               experiment_name=spec.train.mlflow_experiment or name, run_name=name)
    run_id = module.active_run().info.run_id
    _ACTIVE_MLFLOW_RUNS.add(run_id)
    storage.write_text(storage.join(run_dir, MLFLOW_RUN_FILE), run_id)
    return module, run_id


def _ray_setup_mlflow(**kwargs):
    """Ray's MLflow setup (tracking URI, experiment created if missing, run started, params logged).

    Only raykit/ray/ uses Ray Train or Tune. ``ray.air.integrations.mlflow`` is neither's API (though it
    imports parts of Tune itself); importing it here, lazily and only when MLflow is asked for, keeps
    MLflow on rank 0 inside the backend loop, which is where the metrics are."""
    from ray.air.integrations.mlflow import setup_mlflow

    # rank_zero_only=False: the caller already runs on rank 0 alone.
    return setup_mlflow(**kwargs, create_experiment_if_not_exists=True, rank_zero_only=False)


def _previous_mlflow_run(run_dir: str) -> str | None:
    location = storage.join(run_dir, MLFLOW_RUN_FILE)
    if not storage.exists(location):
        return None
    return storage.read_text(location).strip() or None


def spec_params(spec) -> dict:
    """The spec as ``{dotted field path: value}`` (``optim.lr: 0.001``); lists and mappings become JSON
    text, so that they stay one parameter each."""
    params = {}

    def walk(node, prefix: str) -> None:
        for item in dataclasses.fields(node):
            value, path = getattr(node, item.name), f"{prefix}{item.name}"
            if dataclasses.is_dataclass(value):
                walk(value, path + ".")
            else:
                params[path] = json.dumps(value) if isinstance(value, (list, dict)) else value

    walk(spec, "")
    return params
