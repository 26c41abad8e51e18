"""The one epoch driver every backend runs: raykit's training loop, written once.

:func:`fit` owns what does not depend on the framework — the data order and shards, epochs, the metrics
row (``train.metrics`` from :class:`raykit.metrics.EvalStats` summed over the ranks), progress bars and
ETA, early stopping and ``train.stop_at``, metric sinks, report and checkpoint cadence, fault points,
resume bookkeeping — and asks a :class:`~raykit.backends.base.Backend` for the rest (model, optimizer,
loss, one epoch of steps, evaluation sums or logits, collectives, checkpoint files).
:func:`evaluate_checkpoint`, :func:`predict_split` and :class:`Predictor` run a finished checkpoint
through the backend's inference model. Nothing here imports torch, TensorFlow or Ray::

    from raykit.engine import fit
    from raykit.session import WorkerSession
    result = fit(spec, WorkerSession())      # {"history": [...], "best_metric": ..., "stopped_early": ...}
"""

from __future__ import annotations

import itertools
import math
import shutil
import tempfile
import time
from typing import Callable, Iterable

import numpy as np

from raykit import faults
from raykit.backends import load_backend
from raykit.backends.base import Backend
from raykit.data import DataInfo, Splits, plan_data, to_float, worker_data
from raykit.data.order import batch_indices, epoch_order, shard_rows
from raykit.history import Progress, epoch_bar, epoch_line, history_csv
from raykit.metrics import EvalStats
from raykit.schedules import frozen_at_epoch
from raykit.session import WorkerSession, peak_rss_mb
from raykit.sinks import MetricSinks
from raykit.spec import RunSpec
from raykit.storage import join, write_text
from raykit.timing import Stopwatch


def eval_batch_rows(use_gpu: bool) -> int:
    """Rows per evaluation batch (validation, test): no gradients, so larger than training batches on a GPU.
    On the CPU activations that outgrow the caches cost more than the batches save: the seed CNN on
    10,000 CIFAR-10 images (channels-last, 2 threads) took 0.9 s in batches of 128, 2.4 s in batches of
    1024."""
    return 1024 if use_gpu else 128


def fit(spec: RunSpec, session: WorkerSession) -> dict:
    """Train ``spec`` on this worker with the backend ``spec.framework`` names.

    Returns ``{"history": [metrics per epoch], "best_metric": ..., "stopped_early": bool,
    "best_checkpoint_epoch": the epoch whose checkpoint the run's ranking names best, or None,
    "timings": {"data_s", "model_build_s", "epochs_s": seconds this worker spent on each}}``.
    """
    watch = Stopwatch()
    with watch.phase("model_build_s"):  # loading a backend imports its framework (TensorFlow: seconds)
        backend = load_backend(spec.framework)(spec, session)
        backend.seed(spec.train.seed)  # the same on every rank: the same initial weights
    with watch.phase("data_s"):
        info, splits = worker_data(spec.data, session.streams, session.data_info, session.splits)
        session.splits = splits  # an evaluation after the loop, in this process, reads these, not the files
        info = _with_classes(spec, info, splits)
    with watch.phase("model_build_s"):
        backend.build(info, optimizer_steps_per_epoch(info.sizes["train"], spec, session.world_size))
        progress = _start(backend, session)
    with watch.phase("data_s"):
        feeds = _feeds(backend, spec, session, splits)
    run = _Run(spec, session, backend, info, progress, feeds)
    with watch.phase("epochs_s"):
        try:
            for epoch in range(progress.epoch + 1, spec.train.epochs + 1):
                if progress.stopped_early:
                    break
                run.epoch(epoch)
        except BaseException:
            run.close(succeeded=False)  # the tracking runs end as failed (a resume continues them)
            raise
        run.close()
    checkpoint = spec.checkpoint
    return {"history": progress.history, "best_metric": progress.best_metric,
            "stopped_early": progress.stopped_early,
            "best_checkpoint_epoch": progress.best_checkpoint_epoch(checkpoint.monitor, checkpoint.mode,
                                                                    checkpoint.keep_best),
            "timings": watch.seconds}


def _with_classes(spec: RunSpec, info: DataInfo, splits: Splits | None) -> DataInfo:
    """``info`` with the model's number of classes (the spec's, or the data's), checked against the
    labels of data held in memory (streamed data was checked by the driver's plan)."""
    num_classes = spec.model.num_classes or info.num_classes
    if splits is not None:
        largest = max(int(s.y.max()) for s in (splits.train, splits.val, splits.test) if len(s))
        if largest >= num_classes:
            raise ValueError(f"model.num_classes: got {num_classes}, but the data has label {largest}; accepted: "
                             f"at least {largest + 1}, or null to take it from the data")
    return DataInfo(info.input_shape, num_classes, info.sizes, info.class_names)


def _start(backend: Backend, session: WorkerSession) -> Progress:
    """Where training starts: a checkpoint's full state, or fresh (initial weights, per-rank seeds)."""
    if session.resume_dir:
        state, rng_states = backend.restore(session.resume_dir)
        if len(rng_states) == session.world_size:
            backend.apply_rng(rng_states[session.rank])
        session.log(f"resuming after epoch {state['epoch']} from {session.resume_dir}")
        return Progress.from_state(state)
    report = backend.load_initial_weights()
    if report:
        session.log(report)
    backend.seed_rank(backend.spec.train.seed, session.rank)  # own dropout masks from here on
    return Progress()


class _Feeds:
    """``train(epoch)`` and ``val()``: this rank's batches in the backend's form."""

    def __init__(self, train: Callable[[int], Iterable], val: Callable[[], Iterable]):
        self.train, self.val = train, val


def _feeds(backend: Backend, spec: RunSpec, session: WorkerSession, splits: Splits | None) -> _Feeds:
    """From memory (the split converted once, then a seeded order per epoch: :mod:`raykit.data.order`)
    or from the Ray Data stream."""
    cap = (spec.train.max_steps_per_epoch or 0) * spec.train.grad_accum_steps or None
    if splits is None:
        def streamed(name):
            return (backend.batch(batch["x"], batch["y"]) for batch in session.streams[name]())

        return _Feeds(lambda epoch: itertools.islice(streamed("train"), cap), lambda: streamed("val"))
    train = backend.to_arrays(splits.train.x, splits.train.y)
    rows = shard_rows(len(splits.val), session.rank, session.world_size)
    val = backend.to_arrays(splits.val.x[rows], splits.val.y[rows])

    def train_batches(epoch: int):
        order = epoch_order(len(splits.train), spec.train.seed, epoch, session.rank, session.world_size)
        return (backend.take(train, index) for index in batch_indices(order, spec.per_worker_batch_size)[:cap])

    return _Feeds(train_batches, lambda: (backend.take(val, index)
                                          for index in batch_indices(np.arange(len(rows)),
                                                                     eval_batch_rows(session.use_gpu))))


class _Run:
    """One worker's pass over the epochs: the state :func:`fit` carries from one epoch to the next."""

    def __init__(self, spec: RunSpec, session: WorkerSession, backend: Backend, info: DataInfo,
                 progress: Progress, feeds: _Feeds):
        self.spec, self.session, self.backend, self.info = spec, session, backend, info
        self.progress, self.feeds = progress, feeds
        self.freezable = backend.freezable_layers()
        self.frozen: list[str] | None = None
        self.planned = batches_per_epoch(info.sizes["train"], spec, session.world_size)
        self.evaluation = EvalStats(info.num_classes, spec.train.metrics, info.class_names)  # empty: a template
        self.sinks = MetricSinks.open(spec, session.run_dir, progress.epoch) \
            if session.is_chief and session.run_dir else None
        self.started, self.first_epoch = time.perf_counter(), progress.epoch

    def epoch(self, epoch: int) -> None:
        spec, session, backend, progress = self.spec, self.session, self.backend, self.progress
        self._update_freezing(epoch)
        epoch_started = time.perf_counter()
        bar = epoch_bar(session, spec, epoch, self.planned)
        totals = backend.train_epoch(self.feeds.train(epoch), epoch, progress.global_step,
                                     self._on_batch(bar, epoch))
        bar.close()
        train = backend.all_reduce_sum(totals.as_array())
        progress.global_step += totals.steps
        extra = backend.end_of_epoch()
        local = _evaluation_sums(backend, self.feeds.val(), self.evaluation)
        val = self.evaluation.from_array(backend.all_reduce_sum(local))  # exact over the ranks' val shards
        extra.update(backend.after_validation())
        # Compilation (train.compile) is a one-off cost: kept out of the epoch's time and samples/s.
        seconds = time.perf_counter() - epoch_started - extra.get("compile_s", 0.0)
        metrics = {"epoch": epoch, "train_loss": train[0] / train[2], "train_acc": train[1] / train[2],
                   **val.values("val"),
                   "lr": backend.learning_rate(progress.global_step), "epoch_time_s": seconds,
                   "samples_per_s": self.info.sizes["train"] / seconds, "global_step": progress.global_step,
                   "peak_rss_mb": peak_rss_mb(), **extra}
        metrics = {key: float(value) if isinstance(value, np.floating) else value for key, value in metrics.items()}
        progress.record(metrics, spec.checkpoint.monitor, spec.checkpoint.mode, spec.train.early_stopping_patience,
                        spec.train.stop_at)
        elapsed = time.perf_counter() - self.started
        session.log(epoch_line(metrics, spec.train.epochs, elapsed,
                               (spec.train.epochs - epoch) * elapsed / (epoch - self.first_epoch)))
        if progress.stopped_early:
            session.log(progress.stop_reason(spec.checkpoint.monitor, spec.train.early_stopping_patience,
                                             spec.train.stop_at))
        self._report(metrics)
        faults.inject("after_report", epoch=epoch, rank=session.rank)

    def close(self, succeeded: bool = True) -> None:
        if self.sinks:
            self.sinks.close(succeeded)

    def _on_batch(self, bar, epoch: int) -> Callable[[int, int], None]:
        middle, rank = self.planned // 2, self.session.rank

        def on_batch(index: int, samples: int) -> None:
            if index == middle:
                faults.inject("mid_epoch", epoch=epoch, rank=rank)
            bar.update(samples)

        return on_batch

    def _update_freezing(self, epoch: int) -> None:
        """Freeze (and, with gradual unfreezing, thaw) layers for this epoch; the backend re-wraps or
        retraces only when the set changes."""
        frozen = frozen_at_epoch(self.freezable, self.spec.finetune, epoch)
        if frozen == self.frozen:
            return
        if self.frozen is not None:
            self.session.log(f"epoch {epoch}: {len(frozen)} layers frozen (was {len(self.frozen)})")
        elif frozen:
            shown = ", ".join(frozen[:6]) + (" ..." if len(frozen) > 6 else "")
            self.session.log(f"freezing {len(frozen)} layers: {shown}")
        self.backend.set_frozen(frozen)
        self.frozen = frozen

    def _report(self, metrics: dict) -> None:
        """Report this epoch's metrics on every rank, with a checkpoint from rank 0 when one is due; rank 0
        also writes them to metrics.csv and the sinks (TensorBoard, MLflow, W&B)."""
        spec, session, progress = self.spec, self.session, self.progress
        due = progress.checkpoint_due(spec.checkpoint.every_n_epochs, spec.train.epochs)
        if due:
            progress.checkpointed.append(progress.epoch)  # saved with the state: a resume knows it too
        rng = self.backend.capture_rng() if due else None
        rng_states = self.backend.gather(rng) if rng is not None else []  # a collective: every rank calls it
        if session.is_chief:
            if session.run_dir:
                write_text(join(session.run_dir, "metrics.csv"), history_csv(progress.history))
            if self.sinks:
                self.sinks.write(metrics, step=progress.epoch)
        directory, taken = None, False
        try:
            if session.is_chief and due:
                directory = tempfile.mkdtemp(prefix=f"raykit-ckpt-{progress.epoch:04d}-")
                self.backend.save_checkpoint(directory, state=self._checkpoint_state(), metrics=metrics,
                                             spec=spec.to_dict(), rng_states=rng_states)
            taken = session.report(metrics, directory) is True
        finally:
            if directory and not taken:  # a report that took the directory over deletes it (WorkerSession)
                shutil.rmtree(directory, ignore_errors=True)

    def _checkpoint_state(self) -> dict:
        info = self.info
        return {**self.progress.as_state(), "input_shape": list(info.input_shape), "num_classes": info.num_classes,
                "class_names": info.class_names}


def batches_per_epoch(num_train: int, spec: RunSpec, world_size: int) -> int:
    """Batches each rank trains on in one epoch (every rank gets the same number of samples)."""
    batches = math.ceil(num_train // world_size / spec.per_worker_batch_size)
    cap = (spec.train.max_steps_per_epoch or 0) * spec.train.grad_accum_steps
    return min(batches, cap or batches)


def optimizer_steps_per_epoch(num_train: int, spec: RunSpec, world_size: int) -> int:
    """Optimizer steps each rank takes in one epoch (batches / gradient accumulation, rounded up)."""
    return math.ceil(batches_per_epoch(num_train, spec, world_size) / spec.train.grad_accum_steps)


def _evaluation_sums(backend: Backend, batches: Iterable, template: EvalStats) -> np.ndarray:
    """This rank's evaluation statistics in ``template``'s layout (:meth:`EvalStats.as_array`): the backend's
    own (loss sum, correct, samples) when no metric needs the logits (a GPU keeps those sums on the device),
    else each batch's logits added up on the host."""
    if not template.needs_logits:
        return backend.evaluate_totals(batches)
    stats = EvalStats(template.num_classes, template.metrics)
    for loss_sum, logits, labels in backend.evaluate_batches(batches):
        stats.add(loss_sum, logits, labels)
    return stats.as_array()


# --------------------------------------------------------------------------------------------------
# A finished checkpoint: evaluation, prediction, the predictor of batch inference


def evaluate_checkpoint(spec: RunSpec, checkpoint_dir: str, split: str = "test", use_gpu: bool = False,
                        data=None) -> dict:
    """Loss (``train.loss`` on the hard labels), accuracy and the ``train.metrics`` of a checkpoint's model on
    one split of ``spec.data``, or of ``data`` (see :func:`evaluate_split`) (single process; the split is read
    a chunk at a time, so it need not fit in memory): ``{<split>_loss, <split>_acc, <split>_top5_acc, ...,
    <split>_samples}``."""
    return evaluate_split(spec, checkpoint_dir, split, use_gpu, data)[0]


def predict_split(spec: RunSpec, checkpoint_dir: str, split: str = "test", use_gpu: bool = False, data=None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(true labels, predicted labels) of a checkpoint's model on one split of ``spec.data`` (or ``data``)."""
    _, truth, predictions = evaluate_split(spec, checkpoint_dir, split, use_gpu, data)
    return truth, predictions


def evaluate_split(spec: RunSpec, checkpoint_dir: str, split: str = "test", use_gpu: bool = False, data=None
                   ) -> tuple[dict, np.ndarray, np.ndarray]:
    """(:func:`evaluate_checkpoint`'s metrics, true labels, predicted labels) in one pass over one split of
    ``data``: anything with an ``info`` (:class:`~raykit.data.DataInfo`) and ``batches(split, size)`` of
    ``(x, y)``, such as a data plan or data given from Python as Ray holds it; default: ``spec.data``'s plan."""
    data = data or plan_data(spec.data)
    backend = load_backend(spec.framework)
    num_classes = spec.model.num_classes or data.info.num_classes
    model = backend.inference_model(spec, checkpoint_dir, data.info.input_shape, num_classes, use_gpu)
    loss_sum = backend.evaluation_loss(spec, num_classes)
    stats = EvalStats(num_classes, spec.train.metrics, data.info.class_names)
    truth, predictions = [], []
    for x, y in data.batches(split, eval_batch_rows(use_gpu)):
        logits = np.asarray(backend.logits(model, to_float(x)), np.float64)
        stats.add(loss_sum(logits, y), logits, y)
        truth.append(y)
        predictions.append(logits.argmax(1))
    metrics = {**stats.values(split), f"{split}_samples": int(stats.as_array()[2])}
    return metrics, np.concatenate(truth), np.concatenate(predictions)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def reference_logits(spec: RunSpec, checkpoint_dir: str, images: np.ndarray, input_shape, num_classes: int
                     ) -> np.ndarray:
    """The checkpoint model's logits on NHWC float ``images`` (what an export must reproduce)."""
    backend = load_backend(spec.framework)
    return backend.logits(backend.inference_model(spec, checkpoint_dir, input_shape, num_classes), images)


class Predictor:
    """Callable NHWC float images -> (predicted classes, class probabilities), for batch inference (a
    Ray Data actor builds one; the model loads once)."""

    def __init__(self, spec_dict: dict, checkpoint_dir: str, input_shape, num_classes: int, use_gpu: bool):
        from raykit.spec import load_trained_spec

        spec = load_trained_spec(spec_dict)
        self.backend = load_backend(spec.framework)
        self.model = self.backend.inference_model(spec, checkpoint_dir, tuple(input_shape), num_classes, use_gpu)

    def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        probabilities = softmax(np.asarray(self.backend.logits(self.model, to_float(images)), np.float64))
        return probabilities.argmax(1), probabilities.astype(np.float32)
