"""The PyTorch training loop that every raykit worker runs (under TorchTrainer or alone in tests).

Data parallel: each rank trains on a disjoint shard of every epoch's shuffled order, DDP averages the
gradients, and validation metrics are summed over all ranks so they cover the whole split.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import random
import shutil
import tempfile
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from raykit import faults
from raykit.augment import resolve_ops
from raykit.backends.torch import checkpoint as ckpt
from raykit.backends.torch import finetune
from raykit.backends.torch.augment import Augmenter, build_augmenter, make_generator, soft_cross_entropy
from raykit.backends.torch.models import build_model, to_model_layout
from raykit.data import DataInfo, Splits, iter_split, plan_data, to_float, worker_data
from raykit.history import Progress, epoch_bar, epoch_line, history_csv
from raykit.schedules import frozen_at_epoch, lr_multiplier
from raykit.session import WorkerSession, peak_rss_mb
from raykit.sinks import MetricSinks
from raykit.spec import OptimSpec, RunSpec
from raykit.storage import join, write_text

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass
class Worker:
    """Everything one rank trains with."""

    spec: RunSpec
    session: WorkerSession
    device: torch.device
    model: nn.Module  # the bare model
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    augmenter: Augmenter
    freezable: list[str]  # layers the spec freezes at the start
    data_info: DataInfo  # input shape and classes, saved in checkpoints so exports need no data
    wrapped: nn.Module | None = None  # the DDP-wrapped model for training
    frozen: list[str] | None = None  # layers frozen right now


def fit(spec: RunSpec, session: WorkerSession) -> dict:
    """Train ``spec`` on this worker; return ``{"history": [...], "best_metric": ..., "stopped_early": ...}``."""
    seed_everything(spec.train.seed)
    info, splits = worker_data(spec.data, session.streams, session.data_info)
    worker = _build_worker(spec, session, info, splits)
    progress = Progress()
    if session.resume_dir:
        progress = _resume(worker)
    else:
        report = finetune.load_initial_weights(spec, worker.model)
        if report:
            session.log(report.summary())
        seed_everything(spec.train.seed + session.rank)  # same init on all ranks, own dropout masks

    train_batches, val_batches = _feeds(worker, splits)
    planned = _batches_per_epoch(info.sizes["train"], spec, session.world_size)
    sinks = MetricSinks.open(spec, session.run_dir, progress.epoch) if session.is_chief and session.run_dir else None
    started, first_epoch = time.perf_counter(), progress.epoch
    for epoch in range(first_epoch + 1, spec.train.epochs + 1):
        if progress.stopped_early:
            break
        _update_freezing(worker, epoch)
        epoch_started = time.perf_counter()
        train_loss, train_acc, steps = _train_epoch(worker, train_batches(epoch), planned, epoch)
        progress.global_step += steps
        val_loss, val_acc = _evaluate_sharded(worker, val_batches())
        seconds = time.perf_counter() - epoch_started
        metrics = {"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc, "val_loss": val_loss,
                   "val_acc": val_acc, "lr": worker.optimizer.param_groups[0]["lr"], "epoch_time_s": seconds,
                   "samples_per_s": info.sizes["train"] / seconds, "global_step": progress.global_step,
                   "peak_rss_mb": peak_rss_mb(), **_gpu_memory(worker.device)}
        progress.record(metrics, spec.checkpoint.monitor, spec.checkpoint.mode, spec.train.early_stopping_patience,
                        spec.train.stop_at)
        elapsed = time.perf_counter() - started
        remaining = (spec.train.epochs - epoch) * elapsed / (epoch - first_epoch)
        session.log(epoch_line(metrics, spec.train.epochs, elapsed, remaining))
        if progress.stopped_early:
            session.log(progress.stop_reason(spec.checkpoint.monitor, spec.train.early_stopping_patience,
                                             spec.train.stop_at))
        _report(worker, progress, metrics, sinks)
        faults.inject("after_report", epoch=epoch, rank=session.rank)
    if sinks:
        sinks.close()
    return {"history": progress.history, "best_metric": progress.best_metric,
            "stopped_early": progress.stopped_early}


def _build_worker(spec: RunSpec, session: WorkerSession, info: DataInfo, splits: Splits | None) -> Worker:
    device = worker_device(session)
    num_classes = spec.model.num_classes or info.num_classes
    if splits is not None:  # streamed data was checked by the driver's plan
        _check_labels(splits, num_classes)
    model = build_model(spec.model, info.input_shape, num_classes).to(device)
    optimizer = build_optimizer(spec.optim, finetune.parameter_groups(model, spec.optim.lr,
                                                                      spec.finetune.backbone_lr_mult))
    steps_per_epoch = optimizer_steps_per_epoch(info.sizes["train"], spec, session.world_size)
    multiplier = lr_multiplier(spec.optim, steps_per_epoch, steps_per_epoch * spec.train.epochs)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier)
    scaler = torch.amp.GradScaler(device.type, enabled=spec.train.precision == "fp16")
    augmenter = build_augmenter(resolve_ops(spec.augment.preset, spec.augment.ops), num_classes, spec.train.seed)
    return Worker(spec, session, device, model, optimizer, scheduler, scaler, augmenter,
                  freezable=finetune.frozen_layer_names(model, spec.finetune),
                  data_info=DataInfo(info.input_shape, num_classes, info.sizes, info.class_names))


def _check_labels(splits: Splits, num_classes: int) -> None:
    largest = max(int(s.y.max()) for s in (splits.train, splits.val, splits.test) if len(s))
    if largest >= num_classes:
        raise ValueError(f"model.num_classes: got {num_classes}, but the data has label {largest}; accepted: "
                         f"at least {largest + 1}, or null to take it from the data")


def _update_freezing(worker: Worker, epoch: int) -> None:
    """Freeze (and, with gradual unfreezing, thaw) layers for this epoch; re-wrap for DDP when it changes,
    because DDP only synchronises the parameters that required gradients when it was built."""
    frozen = frozen_at_epoch(worker.freezable, worker.spec.finetune, epoch)
    if worker.wrapped is not None and frozen == worker.frozen:
        return
    if worker.frozen is not None and frozen != worker.frozen:
        worker.session.log(f"epoch {epoch}: {len(frozen)} layers frozen (was {len(worker.frozen)})")
    elif frozen:
        worker.session.log(f"freezing {len(frozen)} layers: {', '.join(frozen[:6])}{' ...' if len(frozen) > 6 else ''}")
    finetune.apply_freezing(worker.model, frozen)
    worker.frozen = frozen
    worker.wrapped = worker.session.prepare_model(worker.model)


def _batches_per_epoch(num_train: int, spec: RunSpec, world_size: int) -> int:
    """Batches each rank trains on in one epoch (every rank gets the same number of samples)."""
    batches = math.ceil(num_train // world_size / spec.per_worker_batch_size)
    cap = (spec.train.max_steps_per_epoch or 0) * spec.train.grad_accum_steps
    return min(batches, cap or batches)


def optimizer_steps_per_epoch(num_train: int, spec: RunSpec, world_size: int) -> int:
    return math.ceil(_batches_per_epoch(num_train, spec, world_size) / spec.train.grad_accum_steps)


def _feeds(worker: Worker, splits: Splits | None):
    """``train(epoch)`` and ``val()``: iterables of this rank's (images NCHW, labels) on its device, from
    memory (a seeded shuffle of the whole split, converted to tensors once) or from the Ray Data stream."""
    spec, session, device = worker.spec, worker.session, worker.device
    cap = (spec.train.max_steps_per_epoch or 0) * spec.train.grad_accum_steps or None
    if splits is None:
        def streamed(name):
            for batch in session.streams[name]():  # Ray hands out read-only arrays; torch wants writable ones
                x = np.require(to_float(batch["x"]), requirements="W")
                yield (to_model_layout(torch.from_numpy(x)).to(device),
                       torch.from_numpy(np.array(batch["y"], np.int64)).to(device))

        return lambda epoch: itertools.islice(streamed("train"), cap), lambda: streamed("val")
    x, y = _to_device(splits.train.x, splits.train.y, device)
    val = _to_device(*_shard(splits.val.x, splits.val.y, session), device)

    def train(epoch):
        order = epoch_order(len(y), spec.train.seed, epoch, session.rank, session.world_size).to(device)
        chosen = [order[i:i + spec.per_worker_batch_size] for i in range(0, len(order), spec.per_worker_batch_size)]
        return ((x[c], y[c]) for c in chosen[:cap])

    return train, lambda: _in_batches(*val, 1024)


def _shard(x, y, session: WorkerSession):
    return x[session.rank::session.world_size], y[session.rank::session.world_size]


def _in_batches(x, y, batch_size: int):
    return ((x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(y), batch_size))


def _with_last(items):
    """``(item, is_last)`` for each item of an iterable of unknown length (one item of look-ahead)."""
    iterator = iter(items)
    try:
        current = next(iterator)
    except StopIteration:
        return
    for following in iterator:
        yield current, False
        current = following
    yield current, True


def _train_epoch(worker: Worker, batches, planned: int, epoch: int) -> tuple[float, float, int]:
    spec, session, device = worker.spec, worker.session, worker.device
    generator = make_generator(device, spec.train.seed, epoch, session.rank)
    accum = spec.train.grad_accum_steps
    worker.wrapped.train()
    finetune.keep_frozen_norms_in_eval(worker.model, worker.frozen)
    totals = torch.zeros(3, device=device, dtype=torch.float64)  # loss sum, correct, samples
    steps = 0
    bar = epoch_bar(session, spec, epoch, planned)
    worker.optimizer.zero_grad(set_to_none=True)
    for index, ((batch_x, labels), is_last) in enumerate(_with_last(batches)):
        images, targets = worker.augmenter.train_batch(batch_x, labels, generator)
        last_of_step = (index + 1) % accum == 0 or is_last
        # Between optimizer steps, skip DDP's all-reduce: gradients only need averaging once per step.
        sync = contextlib.nullcontext() if last_of_step or not hasattr(worker.wrapped, "no_sync") \
            else worker.wrapped.no_sync()
        with sync:
            with autocast(device, spec.train.precision):
                logits = worker.wrapped(images)
                loss = soft_cross_entropy(logits.float(), targets, spec.train.label_smoothing)
            worker.scaler.scale(loss / accum).backward()
        if last_of_step:
            _optimizer_step(worker)
            steps += 1
        if index == planned // 2:
            faults.inject("mid_epoch", epoch=epoch, rank=session.rank)
        totals += torch.stack([loss.detach().double() * len(labels), (logits.argmax(1) == labels).sum().double(),
                               torch.tensor(len(labels), device=device, dtype=torch.float64)])
        bar.update(len(labels))
    bar.close()
    totals = _all_reduce(totals, session.world_size)
    return float(totals[0] / totals[2]), float(totals[1] / totals[2]), steps


def _optimizer_step(worker: Worker) -> None:
    if worker.spec.optim.grad_clip_norm:
        worker.scaler.unscale_(worker.optimizer)
        torch.nn.utils.clip_grad_norm_(worker.model.parameters(), worker.spec.optim.grad_clip_norm)
    worker.scaler.step(worker.optimizer)
    worker.scaler.update()
    worker.scheduler.step()
    worker.optimizer.zero_grad(set_to_none=True)


def _resume(worker: Worker) -> Progress:
    session = worker.session
    state, rng_states = ckpt.restore(session.resume_dir, worker.model, worker.optimizer, worker.scheduler,
                                     worker.scaler)
    if len(rng_states) == session.world_size:
        ckpt.apply_rng(rng_states[session.rank])
    session.log(f"resuming after epoch {state['epoch']} from {session.resume_dir}")
    return Progress.from_state(state)


def _report(worker: Worker, progress: Progress, metrics: dict, sinks: MetricSinks | None = None) -> None:
    """Report this epoch's metrics on every rank, with a checkpoint from rank 0 when one is due; rank 0
    also writes them to metrics.csv and ``sinks`` (TensorBoard, MLflow)."""
    spec, session, epoch = worker.spec, worker.session, progress.epoch
    due = progress.checkpoint_due(spec.checkpoint.every_n_epochs, spec.train.epochs)
    rng_states = _gather(ckpt.capture_rng(), session) if due else []
    directory = None
    if session.is_chief:
        if session.run_dir:
            write_text(join(session.run_dir, "metrics.csv"), history_csv(progress.history))
        if sinks:
            sinks.write(metrics, step=epoch)
        if due:
            directory = tempfile.mkdtemp(prefix=f"raykit-ckpt-{epoch:04d}-")
            ckpt.save(directory, model=worker.model, optimizer=worker.optimizer, scheduler=worker.scheduler,
                      scaler=worker.scaler, state=_checkpoint_state(worker, progress), metrics=metrics, rng_states=rng_states,
                      spec=spec.to_dict())
    try:
        session.report(metrics, directory)
    finally:
        if directory:
            shutil.rmtree(directory, ignore_errors=True)


def _gpu_memory(device: torch.device) -> dict:
    """Peak GPU memory this worker's tensors held so far (MiB), on a CUDA device."""
    if device.type != "cuda":
        return {}
    return {"peak_gpu_mb": torch.cuda.max_memory_allocated(device) / 2**20}


def _checkpoint_state(worker: Worker, progress: Progress) -> dict:
    info = worker.data_info
    return {**progress.as_state(), "input_shape": list(info.input_shape), "num_classes": info.num_classes,
            "class_names": info.class_names}


def epoch_order(n: int, seed: int, epoch: int, rank: int, world_size: int) -> torch.Tensor:
    """This rank's sample indices for ``epoch``: a seeded shuffle, trimmed so that every rank gets the
    same number (DDP needs equal step counts), then every ``world_size``-th item from ``rank``."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(n, generator=generator)
    order = order[: n - n % world_size]
    return order[rank::world_size]


def _evaluate_sharded(worker: Worker, batches) -> tuple[float, float]:
    totals = evaluate_totals(worker.wrapped, batches, worker.device, worker.spec.train.precision, worker.augmenter)
    totals = _all_reduce(totals, worker.session.world_size)
    return float(totals[0] / totals[2]), float(totals[1] / totals[2])


@torch.no_grad()
def evaluate_totals(model: nn.Module, batches, device: torch.device, precision: str,
                    augmenter: Augmenter) -> torch.Tensor:
    """Sum of loss, number correct, and number of samples over ``batches`` of (images NCHW, labels) on
    ``device`` (float64 tensor of 3)."""
    model.eval()
    totals = torch.zeros(3, device=device, dtype=torch.float64)
    for batch_x, labels in batches:
        images = augmenter.eval_batch(batch_x)
        with autocast(device, precision):
            logits = model(images)
        loss = nn.functional.cross_entropy(logits.float(), labels, reduction="sum")
        totals += torch.stack([loss.double(), (logits.argmax(1) == labels).sum().double(),
                               torch.tensor(len(labels), device=device, dtype=torch.float64)])
    return totals


def evaluate_checkpoint(spec: RunSpec, checkpoint_dir: str, split: str = "test", use_gpu: bool = False) -> dict:
    """Loss and accuracy of a checkpoint's model on one split of ``spec.data`` (single process; the split
    is read a chunk at a time, so it need not fit in memory)."""
    model, augmenter, device, plan = _checkpoint_model(spec, checkpoint_dir, use_gpu)
    batches = (_to_device(x, y, device) for x, y in iter_split(plan, split, 1024))
    totals = evaluate_totals(model, batches, device, spec.train.precision, augmenter)
    return {f"{split}_loss": float(totals[0] / totals[2]), f"{split}_acc": float(totals[1] / totals[2]),
            f"{split}_samples": int(totals[2])}


def _checkpoint_model(spec: RunSpec, checkpoint_dir: str, use_gpu: bool):
    device = torch.device("cuda") if use_gpu and torch.cuda.is_available() else torch.device("cpu")
    plan = plan_data(spec.data)
    num_classes = spec.model.num_classes or plan.info.num_classes
    model = build_model(spec.model, plan.info.input_shape, num_classes)
    model.load_state_dict(ckpt.load_weights(checkpoint_dir))
    augmenter = build_augmenter(resolve_ops(spec.augment.preset, spec.augment.ops), num_classes, spec.train.seed)
    return model.to(device).eval(), augmenter, device, plan


def build_optimizer(spec: OptimSpec, groups: list[dict]) -> torch.optim.Optimizer:
    if spec.name == "sgd":
        return torch.optim.SGD(groups, lr=spec.lr, momentum=spec.momentum, nesterov=spec.nesterov and spec.momentum > 0,
                               weight_decay=spec.weight_decay)
    if spec.name == "adamw":
        return torch.optim.AdamW(groups, lr=spec.lr, weight_decay=spec.weight_decay)
    return torch.optim.Adam(groups, lr=spec.lr, weight_decay=spec.weight_decay)


def worker_device(session: WorkerSession) -> torch.device:
    if session.use_gpu:
        if not torch.cuda.is_available():
            raise RuntimeError("scaling.use_gpu is true but this worker sees no CUDA device")
        return torch.device("cuda", session.local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def autocast(device: torch.device, precision: str):
    """bf16 / fp16 autocast on the worker's device; fp32 runs as is."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def _to_device(x: np.ndarray, y: np.ndarray, device: torch.device) -> Batch:
    """Images in the model's NCHW layout (converted once, not per batch) and labels, on ``device``."""
    return to_model_layout(torch.from_numpy(to_float(x))).to(device), torch.from_numpy(y).to(device)


def _all_reduce(tensor: torch.Tensor, world_size: int) -> torch.Tensor:
    if world_size > 1 and dist.is_initialized():
        dist.all_reduce(tensor)
    return tensor


def _gather(obj: dict, session: WorkerSession) -> list[dict]:
    if session.world_size > 1 and dist.is_initialized():
        gathered: list = [None] * session.world_size
        dist.all_gather_object(gathered, obj)
        return gathered
    return [obj]


@torch.no_grad()
def predict_split(spec: RunSpec, checkpoint_dir: str, split: str = "test", use_gpu: bool = False
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(true labels, predicted labels) of a checkpoint's model on one split of ``spec.data``."""
    model, augmenter, device, plan = _checkpoint_model(spec, checkpoint_dir, use_gpu)
    truth, predictions = [], []
    for x, y in iter_split(plan, split, 1024):
        images, _ = _to_device(x, y, device)
        predictions.append(model(augmenter.eval_batch(images)).argmax(1).cpu().numpy())
        truth.append(y)
    return np.concatenate(truth), np.concatenate(predictions)
