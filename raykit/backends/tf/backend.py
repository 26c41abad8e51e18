"""The TensorFlow / Keras 3 backend: :class:`TFBackend` implements :class:`raykit.backends.base.Backend`.

A ``MultiWorkerMirroredStrategy`` (TF_CONFIG comes from Ray) holds the model and optimizers; each step
runs ``strategy.run`` on this worker's batch, and the Keras optimizer all-reduces the gradients, so every
rank applies the same update. See ``raykit/backends/tf/__init__.py`` for why this is not ``model.fit``.
After every epoch the ranks average batch-norm statistics and compare weight checksums
(``weights_in_sync`` in the metrics). Images reach the step as stored (uint8 pixels are scaled inside the
traced step, not on the host); ``train.compile`` compiles each replica's forward and backward pass, and
evaluation's forward pass, with XLA (``jit_compile``), the all-reduce and optimizer update staying outside.
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from typing import Callable, Iterable, Iterator

import keras
import numpy as np
import tensorflow as tf

from raykit.augment import resolve_ops
from raykit.backends.base import Backend, EpochTotals
from raykit.backends.tf import INFO
from raykit.backends.tf import checkpoint as ckpt
from raykit.backends.tf import export as exporting
from raykit.backends.tf import finetune, losses
from raykit.backends.tf.augment import build_augmenter, preview_png, step_seed
from raykit.backends.tf.models import build_model
from raykit.backends.tf.optim import build_optimizer
from raykit.data import to_float
from raykit.schedules import lr_multiplier

tf.get_logger().setLevel(logging.WARNING)  # MultiWorkerMirroredStrategy logs every collective at INFO


class TFBackend(Backend):
    info = INFO

    def __init__(self, spec, session):
        super().__init__(spec, session)
        _configure_threads()
        self.strategy = _strategy(session)
        self.train_step = None
        self.jit = spec.train.compile != "off"  # XLA; turned off for good if compilation fails
        self.compiled_calls: set[str] = set()  # "train" / "eval" once a compiled call has succeeded
        self.compile_s = 0.0
        self.eval_logits = None

    # --- set-up -----------------------------------------------------------------------------------
    def seed(self, seed: int) -> None:
        keras.utils.set_random_seed(seed)

    def build(self, data_info, steps_per_epoch: int) -> None:
        spec = self.spec
        set_precision(spec.train.precision)
        with self.strategy.scope():
            self.model = build_model(spec.model, data_info.input_shape, data_info.num_classes)
            self.optimizers = self._build_optimizers()
        self.multiplier = lr_multiplier(spec.optim, steps_per_epoch, steps_per_epoch * spec.train.epochs)
        self.augmenter = build_augmenter(resolve_ops(spec.augment.preset, spec.augment.ops), data_info.num_classes)
        self.loss = losses.Loss(spec.train, data_info.num_classes)

    def _build_optimizers(self) -> list:
        """One optimizer, or a head one and a backbone one at ``lr * backbone_lr_mult``; slots are built for
        every weight, so unfreezing later needs no new optimizer."""
        spec, model = self.spec, self.model
        loss_scaling = spec.train.precision == "fp16"
        everything = list(model.trainable_variables)
        if spec.finetune.backbone_lr_mult == 1.0:
            pairs = [(build_optimizer(spec.optim, spec.optim.lr, loss_scaling), everything)]
        else:
            head, backbone = self._head_and_backbone(everything)
            pairs = [(build_optimizer(spec.optim, spec.optim.lr, loss_scaling), head),
                     (build_optimizer(spec.optim, spec.optim.lr * spec.finetune.backbone_lr_mult, loss_scaling),
                      backbone)]
        for optimizer, variables in pairs:
            optimizer.build(variables)
        return [optimizer for optimizer, _ in pairs]

    def _head_and_backbone(self, variables: list) -> tuple[list, list]:
        head_ids = {id(v) for v in finetune.head_variables(self.model)}
        return [v for v in variables if id(v) in head_ids], [v for v in variables if id(v) not in head_ids]

    def load_initial_weights(self) -> str | None:
        report = finetune.load_initial_weights(self.spec, self.model)
        return report.summary() if report else None

    def restore(self, directory: str) -> tuple[dict, list]:
        return ckpt.restore(directory, self.model, self.optimizers), []

    def freezable_layers(self) -> list[str]:
        return finetune.frozen_layer_names(self.model, self.spec.finetune)

    def set_frozen(self, names: list[str]) -> None:
        """Freeze ``names``; a new set of trainable variables needs a newly traced step."""
        finetune.apply_freezing(self.model, names)
        self.train_step = self._make_train_step()
        self.eval_logits = self._make_eval_logits()

    # --- data -------------------------------------------------------------------------------------
    def to_arrays(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The split as stored (uint8 pixels are scaled in the traced step: a quarter of the bytes to move)."""
        return x, np.asarray(y, np.int64)

    def take(self, arrays, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return arrays[0][index], arrays[1][index]

    def batch(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return x, np.asarray(y, np.int64)

    # --- training ---------------------------------------------------------------------------------
    def _make_train_step(self):
        spec, model, strategy = self.spec, self.model, self.strategy
        variables = list(model.trainable_variables)
        groups = [variables] if len(self.optimizers) == 1 else list(self._head_and_backbone(variables))
        loss_fn = self.loss.per_sample
        clip, optimizers, augmenter = spec.optim.grad_clip_norm, self.optimizers, self.augmenter
        loss_scaling = spec.train.precision == "fp16"

        def forward_backward(images, targets, global_batch):
            with tf.GradientTape() as tape:
                logits = tf.cast(model(images, training=True), tf.float32)
                per_example = loss_fn(logits, targets)
                loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
                scaled = optimizers[0].scale_loss(loss) if loss_scaling else loss
            return tape.gradient(scaled, variables), per_example, logits

        if self.jit:  # XLA for the replica's own work; the cross-worker all-reduce stays outside
            forward_backward = tf.function(forward_backward, jit_compile=True, reduce_retracing=True)

        def replica_step(images, labels, seed, global_batch):
            images, targets = augmenter.train_batch(unit_float(images), labels, seed)
            grads, per_example, logits = forward_backward(images, targets, global_batch)
            if clip:  # clip the all-reduced gradient (as torch does); the optimizer's own sum then restores it
                context = tf.distribute.get_replica_context()
                grads = context.all_reduce(tf.distribute.ReduceOp.SUM, grads)
                grads, _ = tf.clip_by_global_norm(grads, clip)
                grads = [g / strategy.num_replicas_in_sync for g in grads]
            by_id = {id(v): g for v, g in zip(variables, grads)}
            for optimizer, group in zip(optimizers, groups):
                if group:
                    optimizer.apply([by_id[id(v)] for v in group], group)
            correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, 1, output_type=tf.int32), labels), tf.float32))
            count = tf.cast(tf.shape(labels)[0], tf.float32)
            return tf.stack([tf.reduce_sum(per_example), correct, count])

        @tf.function(reduce_retracing=True)
        def step(images, labels, seed, global_batch):
            return strategy.run(replica_step, args=(images, labels, seed, global_batch))

        return step

    def train_epoch(self, batches: Iterable, epoch: int, first_step: int,
                    on_batch: Callable[[int, int], None]) -> EpochTotals:
        spec, session = self.spec, self.session
        totals = np.zeros(3)
        steps = 0
        for index, (batch_x, batch_y) in enumerate(batches):
            for optimizer, base in zip(self.optimizers, self._base_rates()):
                optimizer.learning_rate.assign(base * self.multiplier(first_step + steps))
            local = self._compiled_call("train", lambda: self.train_step(
                tf.constant(batch_x), tf.constant(batch_y, tf.int32), step_seed(spec.train.seed, epoch, session.rank, index),
                tf.constant(len(batch_y) * session.world_size, tf.int32)))
            totals += np.asarray(self.strategy.experimental_local_results(local)[0].numpy(), np.float64)
            steps += 1
            on_batch(index, len(batch_y))
        return EpochTotals(totals[0], totals[1], int(totals[2]), steps)

    def _base_rates(self) -> list[float]:
        lr = self.spec.optim.lr
        return [lr, lr * self.spec.finetune.backbone_lr_mult][: len(self.optimizers)]

    def end_of_epoch(self) -> dict:
        average_norm_statistics(self.model, self.strategy)
        return {}

    def after_validation(self) -> dict:
        extra = {"weights_in_sync": weights_in_sync(self.model, self.strategy)}
        if self.spec.train.compile != "off":
            extra["compile_s"], self.compile_s = self.compile_s, 0.0
        return extra

    def _make_eval_logits(self):
        model, augmenter = self.model, self.augmenter

        def logits_of(images):
            return tf.cast(model(augmenter.eval_batch(unit_float(images)), training=False), tf.float32)

        return tf.function(logits_of, jit_compile=True, reduce_retracing=True) if self.jit else logits_of

    def _compiled_call(self, kind: str, call: Callable):
        """``call()``; with XLA, the time of calls that traced (and so compiled) goes to ``compile_s``, and a
        compilation failure before the first success of ``kind`` falls back to TensorFlow's graph mode."""
        if not self.jit:
            return call()
        function = self.train_step if kind == "train" else self.eval_logits
        traced = function.experimental_get_tracing_count()
        started = time.perf_counter()
        try:
            result = call()
        except Exception as exc:  # noqa: BLE001 -- only before the first compiled call of this kind succeeds
            if kind in self.compiled_calls:
                raise
            warnings.warn(f"train.compile={self.spec.train.compile}: XLA compilation failed ({type(exc).__name__}: "
                          f"{str(exc).strip()[:300]}); training continues without it", RuntimeWarning)
            self.jit = False
            self.train_step, self.eval_logits = self._make_train_step(), self._make_eval_logits()
            return call()
        self.compiled_calls.add(kind)
        if function.experimental_get_tracing_count() != traced:
            self.compile_s += time.perf_counter() - started
        return result

    def evaluate_batches(self, batches: Iterable) -> Iterator[tuple[float, np.ndarray, np.ndarray]]:
        for batch_x, labels in batches:
            logits = self._compiled_call("eval", lambda: self.eval_logits(tf.constant(batch_x)))
            yield float(tf.reduce_sum(self.loss.on_labels(logits, labels))), logits.numpy(), labels

    def learning_rate(self, global_step: int) -> float:
        return self.spec.optim.lr * self.multiplier(global_step)

    # --- collectives ------------------------------------------------------------------------------
    def all_reduce_sum(self, values: np.ndarray) -> np.ndarray:
        return gather_rows(self.strategy, values).sum(axis=0)

    def gather(self, value: dict) -> list[dict]:
        """JSON of every rank, padded to one length and gathered as bytes."""
        data = np.frombuffer(json.dumps(value).encode(), np.uint8).astype(np.float64)
        length = int(gather_rows(self.strategy, np.array([len(data)])).max())
        rows = gather_rows(self.strategy, np.pad(data, (0, length - len(data)), constant_values=32))  # spaces
        return [json.loads(bytes(row.astype(np.uint8)).decode()) for row in rows]

    # --- checkpoints ------------------------------------------------------------------------------
    def save_checkpoint(self, directory: str, *, state: dict, metrics: dict, spec: dict, rng_states: list) -> None:
        # Every random draw of a step comes from a stateless seed of (seed, epoch, rank, step): no RNG to save.
        ckpt.save(directory, model=self.model, optimizers=self.optimizers, state=state, metrics=metrics, spec=spec)

    # --- inference --------------------------------------------------------------------------------
    @classmethod
    def inference_model(cls, spec, checkpoint_dir: str, input_shape, num_classes: int, use_gpu: bool = False):
        set_precision(spec.train.precision)
        return exporting.load_inference_model(spec, checkpoint_dir, input_shape, num_classes)

    @classmethod
    def logits(cls, model, images: np.ndarray) -> np.ndarray:
        return np.asarray(tf.cast(model(to_float(images), training=False), tf.float32))

    user_loss_sum = staticmethod(losses.user_loss_sum)
    export = staticmethod(exporting.export)
    augment_preview_png = staticmethod(preview_png)


def _configure_threads() -> None:
    # Ray sets OMP_NUM_THREADS to the worker's CPUs; TensorFlow's own pools ignore it.
    threads = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
    if threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:  # already initialised in this process
            pass


def _strategy(session) -> tf.distribute.Strategy:
    """MultiWorkerMirroredStrategy inside Ray (TF_CONFIG is set); the default strategy when alone."""
    if "TF_CONFIG" in os.environ:
        return tf.distribute.MultiWorkerMirroredStrategy()
    if session.world_size > 1:
        raise RuntimeError("a multi-worker TF run needs TF_CONFIG (set by Ray's TensorflowTrainer)")
    return tf.distribute.get_strategy()


def set_precision(precision: str) -> None:
    policy = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}[precision]
    keras.mixed_precision.set_global_policy(policy)


_GATHERS: dict = {}


def unit_float(images: tf.Tensor) -> tf.Tensor:
    """Images as stored (uint8 pixels, or floats in [0, 1]) -> float32 in [0, 1], on the step's device."""
    if images.dtype == tf.uint8:
        return tf.cast(images, tf.float32) / 255.0
    return tf.cast(images, tf.float32)


def gather_rows(strategy, local: np.ndarray) -> np.ndarray:
    """One row per worker: the vector ``local`` of every worker, stacked (one collective, traced once
    per strategy rather than run eagerly, which TensorFlow warns is slow)."""
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


def average_norm_statistics(model: keras.Model, strategy) -> None:
    """Average the batch-norm moving statistics over the workers. Under MultiWorkerMirroredStrategy each
    worker updates its own from its own batches (only gradients are all-reduced); averaging them, once
    an epoch, gives every rank the same model to validate and to checkpoint, like synchronised BN."""
    stats = [v for v in model.non_trainable_weights if v.dtype in ("float32", "float64")]
    if not stats or strategy.num_replicas_in_sync == 1:
        return
    flat = np.concatenate([np.asarray(v.numpy(), np.float64).ravel() for v in stats])
    mean = gather_rows(strategy, flat).mean(axis=0)
    offset = 0
    for variable in stats:
        size = int(np.prod(variable.shape))
        variable.assign(mean[offset:offset + size].reshape(variable.shape).astype(variable.dtype))
        offset += size


def weights_in_sync(model: keras.Model, strategy) -> bool:
    """Whether every rank holds exactly the same weights (sum and sum of squares of every weight)."""
    values = [np.asarray(v.numpy(), dtype=np.float64) for v in model.weights]
    digest = np.array([sum(float(v.sum()) for v in values), sum(float((v * v).sum()) for v in values)])
    rows = gather_rows(strategy, digest)
    return bool(np.all(rows == rows[0]))
