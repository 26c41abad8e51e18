"""A finished run as an object: what ``raykit.train`` returns and what ``raykit.Run.open`` reads back.

A run directory (local path or URI) holds ``spec.yaml``, ``metrics.csv``, ``result.json`` and its
``checkpoint_epoch=NNNN/`` directories; :class:`Run` gives them back as Python objects (the spec, a
pandas DataFrame of the metrics, the checkpoints with their epoch and metrics) and loads a checkpoint's
model ready to predict. ``Run.open`` on a sweep directory gives a :class:`raykit.tuning.SweepResult`
whose trials are Runs too.

Example::

    import raykit
    run = raykit.Run.open("runs/my-run")                 # or s3://bucket/runs/my-run
    print(run.metrics_dataframe[["epoch", "val_acc"]])
    model = run.load_model()                             # the best checkpoint's model, eval mode
    logits = model(torch.from_numpy(model.preprocess("digits")))
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import posixpath
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from raykit import storage
from raykit.history import history_csv, read_history_csv
from raykit.metrics import is_scalar_column
from raykit.report import METRICS_FILE, RESULT_FILE, SPEC_FILE, TRIALS_FILE, load_sweep
from raykit.spec import RunSpec, load_trained_spec, yaml_load
from raykit.timing import timings_line

if TYPE_CHECKING:
    from raykit.tuning import SweepResult

CURVES_FILE = "curves.png"
CHECKPOINT_PREFIX = "checkpoint"  # raykit's checkpoint_epoch=NNNN and Tune's checkpoint_NNNNNN alike
_LAYOUT = (f"a run directory ({SPEC_FILE}, {RESULT_FILE}, {METRICS_FILE}, checkpoint_epoch=NNNN/) or a sweep "
           f"directory ({SPEC_FILE}, {TRIALS_FILE}, trials/), as a local path or a URI")


@dataclass(frozen=True)
class RunCheckpoint:
    """One checkpoint of a run: where it is, the epoch it was taken after, that epoch's metrics."""

    path: str
    epoch: int
    metrics: dict


@dataclass
class Run:
    """A finished run: returned by :func:`raykit.train` (as ``TrainResult``, the same class) and by
    :meth:`Run.open` for a run directory written earlier.

    Attributes:
        spec: the resolved spec (name and storage filled in), as written to ``run_dir/spec.yaml``.
        run_dir: ``<storage>/<name>``: spec, metrics CSV, curves PNG, result JSON and checkpoints.
        metrics: the last epoch's metrics.
        test_metrics: ``test_loss``, ``test_acc`` (and ``train.metrics``' ``test_top5_acc``, ...) of the best
            checkpoint on the test split (empty for a sweep trial, which is not evaluated on the test split).
        best_checkpoint: path or URI of the best checkpoint by ``checkpoint.monitor``.
        best_metrics: that checkpoint's epoch metrics.
        exported_model: the best model's weights under ``run_dir/export/``, named by
            ``checkpoint.export_template``.
        history: one dict of metrics per epoch (:attr:`metrics_dataframe` as a table).
        seconds: wall time of the whole call.
        timings: where that time went, phase -> seconds (:data:`raykit.timing.PHASES`; also in
            ``result.json``).
        data: what it trained on (also in ``result.json``): the training source's ``uri``, a named dataset's
            ``source`` (the official release or a re-encoding; None for other data), split ``sizes``.
        checkpoint_dir: where the checkpoints are when not in ``run_dir`` (a sweep trial's are in Tune's
            trial directory).
    """

    spec: RunSpec
    run_dir: str
    metrics: dict
    test_metrics: dict
    best_checkpoint: str | None
    best_metrics: dict | None
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    exported_model: str | None = None
    timings: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)
    checkpoint_dir: str | None = None

    @classmethod
    def open(cls, location: "str | os.PathLike") -> "Run | SweepResult":
        """Reopen a finished run or sweep from its directory: a local path or a URI (``s3://``, ``gs://``, ...).

        A run directory gives a :class:`Run`; a sweep directory (it has ``trials.csv``) gives a
        :class:`raykit.tuning.SweepResult` whose ``runs`` are the trials as Runs and whose ``result_grid``
        is Tune's ``ResultGrid``. A run directory copied elsewhere (another bucket) opens with its
        checkpoints found in the new place.

        Raises:
            FileNotFoundError: ``location`` is not a finished run or sweep: naming it, the missing file and
                what is accepted.

        Example::

            run = raykit.Run.open("s3://bucket/runs/exp1")
            print(run.test_accuracy, [c.epoch for c in run.checkpoints])
        """
        location = storage.resolve_storage(os.fspath(location))
        if not storage.exists(storage.join(location, SPEC_FILE)):
            raise FileNotFoundError(f"Run.open: {location!r} has no {SPEC_FILE}, so it is not a raykit run or "
                                    f"sweep; accepted: {_LAYOUT}")
        if storage.exists(storage.join(location, TRIALS_FILE)):
            return open_sweep(location)
        if not storage.exists(storage.join(location, RESULT_FILE)):
            sweep = storage.exists(storage.join(location, "trials"))
            raise FileNotFoundError(
                f"Run.open: {location!r} has {SPEC_FILE} but no {TRIALS_FILE if sweep else RESULT_FILE}: the "
                f"{'sweep' if sweep else 'run'} has not finished (or failed before writing it); accepted: {_LAYOUT}")
        return _open_run(location)

    @property
    def test_accuracy(self) -> float | None:
        return self.test_metrics.get("test_acc")

    @property
    def metrics_dataframe(self):
        """``metrics.csv`` as a pandas DataFrame: one row per epoch (epoch, train/val loss and accuracy,
        learning rate, epoch time, samples/s, global step, peak memory)."""
        import pandas

        return pandas.read_csv(io.StringIO(history_csv(self.history)))

    @property
    def checkpoints(self) -> list[RunCheckpoint]:
        """The run's kept checkpoints, oldest epoch first, each with its epoch and metrics (read from its
        ``manifest.json``)."""
        found = []
        for path in storage.list_dirs(self.checkpoint_dir or self.run_dir, CHECKPOINT_PREFIX):
            manifest_path = storage.join(path, "manifest.json")
            if storage.exists(manifest_path):
                manifest = json.loads(storage.read_text(manifest_path))
                found.append(RunCheckpoint(path=path, epoch=int(manifest["epoch"]),
                                           metrics=dict(manifest.get("metrics") or {})))
        return sorted(found, key=lambda checkpoint: checkpoint.epoch)

    def load_model(self, checkpoint: "RunCheckpoint | str | int | None" = None, *, use_gpu: bool = False):
        """A checkpoint's model, ready to predict: a torch ``nn.Module`` in eval mode or a ``keras.Model``.

        It takes float32 NHWC images in [0, 1] (batch, height, width, channels) and returns logits; the
        spec's evaluation preprocessing (``normalize``) is inside it, so it predicts as ``raykit predict``
        and ``raykit evaluate`` do. ``model.preprocess(images)`` turns what you have into that input: a
        local path or URI of data (Parquet, an image folder, ``.npz``, ``digits``: decoded, converted to the
        run's colour mode and resized as ``raykit predict`` does) or an array of uint8 pixels or floats.
        ``model.class_names`` names the outputs.

        Args:
            checkpoint: None for the best checkpoint; an epoch number, a :class:`RunCheckpoint`, a checkpoint
                directory's name in this run (``"checkpoint_epoch=0003"``), or any checkpoint's path or URI.
            use_gpu: put a torch model on the GPU (Keras places it itself).

        Example::

            model = run.load_model()
            with torch.no_grad():
                predicted = model(torch.from_numpy(model.preprocess(images))).argmax(1)
        """
        from raykit.inference import load_model

        return load_model(self.checkpoint_location(checkpoint), use_gpu=use_gpu)

    def checkpoint_location(self, checkpoint: "RunCheckpoint | str | int | None" = None) -> str:
        """The path or URI of ``checkpoint`` (as :meth:`load_model` takes it; None: the best one)."""
        if checkpoint is None:
            if not self.best_checkpoint:
                raise ValueError(f"load_model: the run {self.run_dir!r} has no best checkpoint (it saved none); "
                                 "accepted: checkpoint=<epoch, name or path>")
            return self.best_checkpoint
        if isinstance(checkpoint, RunCheckpoint):
            return checkpoint.path
        if isinstance(checkpoint, int) and not isinstance(checkpoint, bool):
            kept = self.checkpoints
            for candidate in kept:
                if candidate.epoch == checkpoint:
                    return candidate.path
            raise ValueError(f"load_model: checkpoint={checkpoint}: the run {self.run_dir!r} keeps no checkpoint "
                             f"of epoch {checkpoint}; accepted: {[c.epoch for c in kept]} (epochs kept)")
        checkpoint = os.fspath(checkpoint)
        inside = storage.join(self.checkpoint_dir or self.run_dir, checkpoint)
        return inside if "/" not in checkpoint and storage.exists(inside) else checkpoint

    def summary(self) -> str:
        lines = [f"run directory:   {self.run_dir}"]
        if self.test_accuracy is not None:
            lines.append(f"test accuracy:   {self.test_accuracy:.4f} ({self.test_metrics['test_samples']} samples)")
            extra = [f"{key} {value:.4f}" for key, value in self.test_metrics.items()
                     if is_scalar_column(key)]
            if extra:
                lines.append(f"test metrics:    {', '.join(extra)}")
        if self.best_checkpoint:
            monitor = self.spec.checkpoint.monitor
            value = (self.best_metrics or {}).get(monitor)
            shown = f" ({monitor} {value:.4f}, epoch {self.best_metrics.get('epoch')})" if value is not None else ""
            lines.append(f"best checkpoint: {self.best_checkpoint}{shown}")
        if self.exported_model:
            lines.append(f"exported model:  {self.exported_model}")
        lines.append(f"wall time:       {self.seconds:.1f}s")
        if self.timings:
            lines.append(f"where it went:   {timings_line(self.timings)}")
        return "\n".join(lines)

    def result_record(self) -> dict:
        """What ``result.json`` holds (:meth:`open` reads it back)."""
        return {"name": self.spec.name, "metrics": self.metrics, "test_metrics": self.test_metrics,
                "best_checkpoint": self.best_checkpoint, "best_metrics": self.best_metrics,
                "exported_model": self.exported_model, "seconds": self.seconds, "timings": self.timings,
                "data": self.data}

    @classmethod
    def of_trial(cls, sweep_dir: str, trial) -> "Run":
        """One trial of a sweep as a Run: its spec and metrics from ``trials/<trial_id>/``, its checkpoints
        where Tune keeps them (``trial`` is a :class:`raykit.tuning.TrialRecord`)."""
        run_dir = storage.join(sweep_dir, "trials", trial.trial_id)
        best = trial.checkpoint
        manifest_path = storage.join(best, "manifest.json") if best else None
        best_metrics = (json.loads(storage.read_text(manifest_path)).get("metrics")
                        if manifest_path and storage.exists(manifest_path) else None)
        return cls(spec=_read_spec(run_dir), run_dir=run_dir, metrics=trial.history[-1] if trial.history else {},
                   test_metrics={}, best_checkpoint=best, best_metrics=best_metrics, history=list(trial.history),
                   checkpoint_dir=best.rstrip("/").rsplit("/", 1)[0] if best else None)


def _read_spec(run_dir: str) -> RunSpec:
    return load_trained_spec(yaml_load(storage.read_text(storage.join(run_dir, SPEC_FILE))) or {})


def _open_run(run_dir: str) -> Run:
    record = json.loads(storage.read_text(storage.join(run_dir, RESULT_FILE)))
    metrics_csv = storage.join(run_dir, METRICS_FILE)
    history = read_history_csv(storage.read_text(metrics_csv)) if storage.exists(metrics_csv) else []
    return Run(spec=_read_spec(run_dir), run_dir=run_dir, metrics=record.get("metrics") or {},
               test_metrics=record.get("test_metrics") or {},
               best_checkpoint=_moved_with(run_dir, record.get("best_checkpoint")),
               best_metrics=record.get("best_metrics"), history=history, seconds=record.get("seconds") or 0.0,
               exported_model=_moved_with(run_dir, record.get("exported_model"), "export"),
               timings=record.get("timings") or {}, data=record.get("data") or {})


def _moved_with(run_dir: str, recorded: str | None, subdir: str = "") -> str | None:
    """``recorded`` (a path the run wrote into result.json) as it is in ``run_dir`` now: the run directory
    may have been copied or moved since (to a bucket, another disk)."""
    if not recorded:
        return recorded
    name = posixpath.basename(recorded.rstrip("/").replace(os.sep, "/"))
    here = storage.join(run_dir, subdir, name) if subdir else storage.join(run_dir, name)
    return here if storage.exists(here) else recorded


def open_sweep(sweep_dir: str):
    """A finished sweep from its files (no Ray needed): a :class:`raykit.tuning.SweepResult` with a Run per
    trial, ``best_spec`` from ``best.yaml``, and Tune's ``ResultGrid`` loaded when first asked for."""
    result, _, _ = load_sweep(sweep_dir)
    best_yaml = storage.join(sweep_dir, "best.yaml")
    best = load_trained_spec(yaml_load(storage.read_text(best_yaml))) if storage.exists(best_yaml) else None
    return dataclasses.replace(result, best_spec=best, runs=trial_runs(sweep_dir, result.trials),
                               grid_loader=_grid_loader(sweep_dir))


def trial_runs(sweep_dir: str, trials: list) -> list[Run]:
    """A Run for each trial that started (wrote its ``spec.yaml``; a trial whose sampled values made an
    invalid spec never did), in the order of ``trials``."""
    return [Run.of_trial(sweep_dir, trial) for trial in trials
            if storage.exists(storage.join(sweep_dir, "trials", trial.trial_id, SPEC_FILE))]


def _grid_loader(sweep_dir: str):
    def load():
        from raykit.ray.results import load_result_grid

        return load_result_grid(sweep_dir)

    return load
