"""The TensorFlow / Keras 3 training loop every raykit TF worker runs (under TensorflowTrainer or alone).

A ``MultiWorkerMirroredStrategy`` (TF_CONFIG comes from Ray) holds the model and optimizers; each step
runs ``strategy.run`` on this worker's batch, and the Keras optimizer all-reduces the gradients, so every
rank applies the same update. See ``raykit/backends/tf/__init__.py`` for why this is not ``model.fit``.
After every epoch the ranks compare weight checksums (``weights_in_sync`` in the metrics).
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from raykit import faults
from raykit.augment import resolve_ops
from raykit.backends.tf import checkpoint as ckpt
from raykit.backends.tf import finetune
from raykit.backends.tf.augment import Augmenter, build_augmenter, step_seed
from raykit.backends.tf.models import build_model
from raykit.data import DataInfo, Splits, iter_split, plan_data, to_float, worker_data
from raykit.history import Progress, epoch_bar, epoch_line, history_csv
from raykit.schedules import frozen_at_epoch, lr_multiplier
from raykit.session import WorkerSession, peak_rss_mb
from raykit.sinks import MetricSinks
from raykit.spec import RunSpec
from raykit.storage import join, write_text

tf.get_logger().setLevel(logging.WARNING)  # MultiWorkerMirroredStrategy logs every collective at INFO


@dataclass
class Worker:
    spec: RunSpec
    session: WorkerSession
    strategy: tf.distribute.Strategy
    model: keras.Model
    optimizers: list  # [all] or [head, backbone] with finetune.backbone_lr_mult
    augmenter: Augmenter
    freezable: list[str]
    multiplier: object  # step -> learning-rate multiplier
    train_step: object = None
    frozen: list[str] | None = None


def fit(spec: RunSpec, session: WorkerSession) -> dict:
    """Train ``spec`` on this worker; return ``{"history": [...], "best_metric": ..., "stopped_early": ...}``."""
    _configure_threads()
    strategy = _strategy(session)
    keras.utils.set_random_seed(spec.train.seed)
    info, splits = worker_data(spec.data, session.streams, session.data_info)
    worker = _build_worker(spec, session, strategy, info, splits)
    progress = Progress()
    if session.resume_dir:
        progress = Progress.from_state(ckpt.restore(session.resume_dir, worker.model, worker.optimizers))
        session.log(f"resuming after epoch {progress.epoch} from {session.resume_dir}")
    else:
        report = finetune.load_initial_weights(spec, worker.model)
        if report:
            session.log(report.summary())
    train_batches, val_batches = _feeds(worker, splits)
    planned = _batches_per_epoch(info.sizes["train"], spec, session.world_size)
    sinks = MetricSinks.open(spec, session.run_dir, progress.epoch) if session.is_chief and session.run_dir else None
    started, first_epoch = time.perf_counter(), progress.epoch
    for epoch in range(first_epoch + 1, spec.train.epochs + 1):
        if progress.stopped_early:
            break
        _update_freezing(worker, epoch)
        epoch_started = time.perf_counter()
        train_loss, train_acc, steps = _train_epoch(worker, train_batches(epoch), planned, epoch,
                                                    progress.global_step)
        progress.global_step += steps
        average_norm_statistics(worker)
        val_loss, val_acc = _evaluate_sharded(worker, val_batches())
        seconds = time.perf_counter() - epoch_started
        metrics = {"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc, "val_loss": val_loss,
                   "val_acc": val_acc, "lr": spec.optim.lr * worker.multiplier(progress.global_step),
                   "epoch_time_s": seconds, "samples_per_s": info.sizes["train"] / seconds,
                   "global_step": progress.global_step, "peak_rss_mb": peak_rss_mb(),
                   "weights_in_sync": weights_in_sync(worker)}
        progress.record(metrics, spec.checkpoint.monitor, spec.checkpoint.mode, spec.train.early_stopping_patience,
                        spec.train.stop_at)
        elapsed = time.perf_counter() - started
        session.log(epoch_line(metrics, spec.train.epochs, elapsed,
                               (spec.train.epochs - epoch) * elapsed / (epoch - first_epoch)))
        if progress.stopped_early:
            session.log(progress.stop_reason(spec.checkpoint.monitor, spec.train.early_stopping_patience,
                                             spec.train.stop_at))
        _report(worker, progress, metrics, info, sinks)
        faults.inject("after_report", epoch=epoch, rank=session.rank)
    if sinks:
        sinks.close()
    return {"history": progress.history, "best_metric": progress.best_metric,
            "stopped_early": progress.stopped_early}


def _configure_threads() -> None:
    # Ray sets OMP_NUM_THREADS to the worker's CPUs; TensorFlow's own pools ignore it.
    threads = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
    if threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:  # already initialised in this process
            pass


def _strategy(session: WorkerSession) -> tf.distribute.Strategy:
    """MultiWorkerMirroredStrategy inside Ray (TF_CONFIG is set); the default strategy when alone."""
    if "TF_CONFIG" in os.environ:
        return tf.distribute.MultiWorkerMirroredStrategy()
    if session.world_size > 1:
        raise RuntimeError("a multi-worker TF run needs TF_CONFIG (set by Ray's TensorflowTrainer)")
    return tf.distribute.get_strategy()


def _set_precision(spec: RunSpec) -> None:
    policy = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}[spec.train.precision]
    keras.mixed_precision.set_global_policy(policy)


def _build_worker(spec: RunSpec, session: WorkerSession, strategy, info: DataInfo, splits: Splits | None) -> Worker:
    num_classes = spec.model.num_classes or info.num_classes
    if splits is not None:  # streamed data was checked by the driver's plan
        largest = int(max(s.y.max() for s in (splits.train, splits.val, splits.test) if len(s)))
        if largest >= num_classes:
            raise ValueError(f"model.num_classes: got {num_classes}, but the data has label {largest}; accepted: "
                             f"at least {largest + 1}, or null to take it from the data")
    _set_precision(spec)
    with strategy.scope():
        model = build_model(spec.model, info.input_shape, num_classes)
        optimizers = _build_optimizers(spec, model)
    steps_per_epoch = _batches_per_epoch(info.sizes["train"], spec, session.world_size)
    multiplier = lr_multiplier(spec.optim, steps_per_epoch, steps_per_epoch * spec.train.epochs)
    augmenter = build_augmenter(resolve_ops(spec.augment.preset, spec.augment.ops), num_classes)
    return Worker(spec, session, strategy, model, optimizers, augmenter,
                  freezable=finetune.frozen_layer_names(model, spec.finetune), multiplier=multiplier)


def _optimizer(spec: RunSpec, lr: float):
    optim = spec.optim
    if optim.name == "sgd":
        opt = keras.optimizers.SGD(lr, momentum=optim.momentum, nesterov=optim.nesterov,
                                   weight_decay=optim.weight_decay or None)
    elif optim.name == "adamw":
        opt = keras.optimizers.AdamW(lr, weight_decay=optim.weight_decay)
    else:  # torch's Adam weight_decay is L2 added to the gradient; Keras's is decoupled: closest match
        opt = keras.optimizers.Adam(lr, weight_decay=optim.weight_decay or None)
    if spec.train.precision == "fp16":
        opt = keras.optimizers.LossScaleOptimizer(opt)
    return opt


def _build_optimizers(spec: RunSpec, model: keras.Model) -> list:
    """One optimizer, or a head one and a backbone one at ``lr * backbone_lr_mult``; slots are built for
    every weight, so unfreezing later needs no new optimizer."""
    lr = spec.optim.lr
    head_ids = {id(v) for v in finetune.head_variables(model)}
    everything = list(model.trainable_variables)
    if spec.finetune.backbone_lr_mult == 1.0:
        optimizers = [(_optimizer(spec, lr), everything)]
    else:
        optimizers = [(_optimizer(spec, lr), [v for v in everything if id(v) in head_ids]),
                      (_optimizer(spec, lr * spec.finetune.backbone_lr_mult),
                       [v for v in everything if id(v) not in head_ids])]
    for optimizer, variables in optimizers:
        optimizer.build(variables)
    return [optimizer for optimizer, _ in optimizers]


def _update_freezing(worker: Worker, epoch: int) -> None:
    """Freeze/thaw for this epoch; a new set of trainable variables needs a newly traced step."""
    frozen = frozen_at_epoch(worker.freezable, worker.spec.finetune, epoch)
    if worker.train_step is not None and frozen == worker.frozen:
        return
    if frozen:
        worker.session.log(f"epoch {epoch}: {len(frozen)} layers frozen")
    finetune.apply_freezing(worker.model, frozen)
    worker.frozen = frozen
    worker.train_step = _make_train_step(worker)


def _make_train_step(worker: Worker):
    spec, model, strategy = worker.spec, worker.model, worker.strategy
    variables = list(model.trainable_variables)
    head_ids = {id(v) for v in finetune.head_variables(model)}
    groups = [variables] if len(worker.optimizers) == 1 else [
        [v for v in variables if id(v) in head_ids], [v for v in variables if id(v) not in head_ids]]
    loss_fn = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=spec.train.label_smoothing,
                                                   reduction=None)
    clip = spec.optim.grad_clip_norm

    def replica_step(images, labels, seed, global_batch):
        images, targets = worker.augmenter.train_batch(images, labels, seed)
        with tf.GradientTape() as tape:
            logits = tf.cast(model(images, training=True), tf.float32)
            per_example = loss_fn(targets, logits)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
            scaled = worker.optimizers[0].scale_loss(loss) if spec.train.precision == "fp16" else loss
        grads = tape.gradient(scaled, variables)
        if clip:  # clip the all-reduced gradient (as torch does); the optimizer's own sum then restores it
            context = tf.distribute.get_replica_context()
            grads = context.all_reduce(tf.distribute.ReduceOp.SUM, grads)
            grads, _ = tf.clip_by_global_norm(grads, clip)
            grads = [g / strategy.num_replicas_in_sync for g in grads]
        by_id = {id(v): g for v, g in zip(variables, grads)}
        for optimizer, group in zip(worker.optimizers, groups):
            if group:
                optimizer.apply([by_id[id(v)] for v in group], group)
        correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, 1, output_type=tf.int32), labels), tf.float32))
        count = tf.cast(tf.shape(labels)[0], tf.float32)
        return tf.stack([tf.reduce_sum(per_example), correct, count])

    @tf.function(reduce_retracing=True)
    def step(images, labels, seed, global_batch):
        return strategy.run(replica_step, args=(images, labels, seed, global_batch))

    return step


def _batches_per_epoch(num_train: int, spec: RunSpec, world_size: int) -> int:
    """Batches (= optimizer steps) each rank runs in one epoch; every rank gets the same number of samples."""
    batches = -(-(num_train // world_size) // spec.per_worker_batch_size)
    return min(batches, spec.train.max_steps_per_epoch or batches)


def _feeds(worker: Worker, splits: Splits | None):
    """``train(epoch)`` and ``val()``: iterables of this rank's (images NHWC float32, labels) NumPy batches,
    from memory (a seeded shuffle of the whole split) or from the Ray Data stream."""
    spec, session = worker.spec, worker.session
    cap = spec.train.max_steps_per_epoch
    if splits is None:
        def streamed(name):
            for batch in session.streams[name]():
                yield to_float(batch["x"]), np.asarray(batch["y"], np.int64)

        return lambda epoch: itertools.islice(streamed("train"), cap), lambda: streamed("val")
    x, y = splits.train.x, splits.train.y
    val = splits.val.shard(session.rank, session.world_size)
    size = spec.per_worker_batch_size

    def train(epoch):
        order = _epoch_order(len(y), spec.train.seed, epoch, session.rank, session.world_size)
        chosen = [order[i:i + size] for i in range(0, len(order), size)]
        return ((x[c], y[c]) for c in chosen[:cap])

    return train, lambda: ((val.x[i:i + 1024], val.y[i:i + 1024]) for i in range(0, len(val), 1024))


def _train_epoch(worker: Worker, batches, planned: int, epoch: int, global_step: int) -> tuple[float, float, int]:
    spec, session = worker.spec, worker.session
    totals = np.zeros(3)
    steps = 0
    bar = epoch_bar(session, spec, epoch, planned)
    for index, (batch_x, batch_y) in enumerate(batches):
        for optimizer in worker.optimizers:
            base = spec.optim.lr * (1.0 if optimizer is worker.optimizers[0] else spec.finetune.backbone_lr_mult)
            optimizer.learning_rate.assign(base * worker.multiplier(global_step + steps))
        local = worker.train_step(tf.constant(batch_x), tf.constant(batch_y, tf.int32),
                                  step_seed(spec.train.seed, epoch, session.rank, index),
                                  tf.constant(len(batch_y) * session.world_size, tf.int32))
        totals += _local(worker.strategy, local)
        steps += 1
        if index == planned // 2:
            faults.inject("mid_epoch", epoch=epoch, rank=session.rank)
        bar.update(len(batch_y))
    bar.close()
    totals = _sum_over_workers(worker.strategy, totals)
    return float(totals[0] / totals[2]), float(totals[1] / totals[2]), steps


def _epoch_order(n: int, seed: int, epoch: int, rank: int, world_size: int) -> np.ndarray:
    """This rank's indices: a seeded shuffle trimmed to a multiple of the world size (equal step counts
    on every rank, which the gradient all-reduce needs), then every ``world_size``-th from ``rank``."""
    order = np.random.default_rng([seed, epoch]).permutation(n)
    return order[: n - n % world_size][rank::world_size]


def _local(strategy, value) -> np.ndarray:
    return np.asarray(strategy.experimental_local_results(value)[0].numpy(), dtype=np.float64)


def _sum_over_workers(strategy, local: np.ndarray) -> np.ndarray:
    """Sum a small local vector over all workers (one collective)."""
    return _gather_rows(strategy, local).sum(axis=0)


_GATHERS: dict = {}


def _gather_rows(strategy, local: np.ndarray) -> np.ndarray:
    """One row per worker: the vector ``local`` of every worker, stacked (one collective, traced once
    per strategy and length rather than run eagerly, which TensorFlow warns is slow)."""
    local = np.asarray(local, dtype=np.float64)
    if strategy.num_replicas_in_sync == 1:
        return local[None]
    gather = _GATHERS.get(id(strategy))
    if gather is None:
        @tf.function(reduce_retracing=True)
        def gather(value):
            return strategy.gather(strategy.run(tf.identity, args=(value,)), axis=0)

        _GATHERS[id(strategy)] = gather
    return gather(tf.constant(local[None])).numpy()


def average_norm_statistics(worker: Worker) -> None:
    """Average the batch-norm moving statistics over the workers. Under MultiWorkerMirroredStrategy each
    worker updates its own from its own batches (only gradients are all-reduced); averaging them, once
    an epoch, gives every rank the same model to validate and to checkpoint, like synchronised BN."""
    stats = [v for v in worker.model.non_trainable_weights if v.dtype in ("float32", "float64")]
    if not stats or worker.strategy.num_replicas_in_sync == 1:
        return
    flat = np.concatenate([np.asarray(v.numpy(), np.float64).ravel() for v in stats])
    mean = _gather_rows(worker.strategy, flat).mean(axis=0)
    offset = 0
    for variable in stats:
        size = int(np.prod(variable.shape))
        variable.assign(mean[offset:offset + size].reshape(variable.shape).astype(variable.dtype))
        offset += size


def weights_in_sync(worker: Worker) -> bool:
    """Whether every rank holds exactly the same weights (sum and sum of squares of every weight)."""
    values = [np.asarray(v.numpy(), dtype=np.float64) for v in worker.model.weights]
    digest = np.array([sum(float(v.sum()) for v in values), sum(float((v * v).sum()) for v in values)])
    rows = _gather_rows(worker.strategy, digest)
    return bool(np.all(rows == rows[0]))


def _evaluate_sharded(worker: Worker, batches) -> tuple[float, float]:
    totals = _sum_over_workers(worker.strategy, evaluate_totals(worker.model, batches, worker.augmenter))
    return float(totals[0] / totals[2]), float(totals[1] / totals[2])


def evaluate_totals(model: keras.Model, batches, augmenter: Augmenter) -> np.ndarray:
    """Sum of loss, number correct, and number of samples over (images, labels) NumPy batches, on this
    worker alone."""
    totals = np.zeros(3)
    for batch_x, labels in batches:
        images = augmenter.eval_batch(tf.constant(batch_x))
        logits = tf.cast(model(images, training=False), tf.float32)
        loss = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
        totals += [float(tf.reduce_sum(loss)), float(np.sum(np.argmax(logits, 1) == labels)), len(labels)]
    return totals


def _report(worker: Worker, progress: Progress, metrics: dict, info: DataInfo,
            sinks: MetricSinks | None = None) -> None:
    """Report on every rank; rank 0 adds a checkpoint when one is due and writes the metrics to
    metrics.csv and ``sinks`` (TensorBoard, MLflow)."""
    spec, session = worker.spec, worker.session
    directory = None
    if session.is_chief:
        if session.run_dir:
            write_text(join(session.run_dir, "metrics.csv"), history_csv(progress.history))
        if sinks:
            sinks.write(metrics, step=progress.epoch)
        if progress.checkpoint_due(spec.checkpoint.every_n_epochs, spec.train.epochs):
            directory = tempfile.mkdtemp(prefix=f"raykit-ckpt-{progress.epoch:04d}-")
            state = {**progress.as_state(), "input_shape": list(info.input_shape),
                     "num_classes": worker.model.output_shape[-1], "class_names": info.class_names}
            ckpt.save(directory, model=worker.model, optimizers=worker.optimizers, state=state,
                      metrics=metrics, spec=spec.to_dict())
    try:
        session.report(metrics, directory)
    finally:
        if directory:
            shutil.rmtree(directory, ignore_errors=True)


def evaluate_checkpoint(spec: RunSpec, checkpoint_dir: str, split: str = "test", use_gpu: bool = False) -> dict:
    """Loss and accuracy of a checkpoint's model on one split of ``spec.data`` (single process; the split
    is read a chunk at a time, so it need not fit in memory)."""
    model, augmenter, plan = _checkpoint_model(spec, checkpoint_dir)
    totals = evaluate_totals(model, iter_split(plan, split, 1024), augmenter)
    return {f"{split}_loss": float(totals[0] / totals[2]), f"{split}_acc": float(totals[1] / totals[2]),
            f"{split}_samples": int(totals[2])}


def _checkpoint_model(spec: RunSpec, checkpoint_dir: str):
    plan = plan_data(spec.data)
    num_classes = spec.model.num_classes or plan.info.num_classes
    _set_precision(spec)
    model = build_model(spec.model, plan.info.input_shape, num_classes)
    ckpt.load_weights(checkpoint_dir, model)
    return model, build_augmenter(resolve_ops(spec.augment.preset, spec.augment.ops), num_classes), plan


def predict_split(spec: RunSpec, checkpoint_dir: str, split: str = "test", use_gpu: bool = False
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(true labels, predicted labels) of a checkpoint's model on one split of ``spec.data``."""
    model, augmenter, plan = _checkpoint_model(spec, checkpoint_dir)
    truth, predictions = [], []
    for x, y in iter_split(plan, split, 1024):
        predictions.append(np.argmax(model(augmenter.eval_batch(tf.constant(x)), training=False), 1))
        truth.append(y)
    return np.concatenate(truth), np.concatenate(predictions)
