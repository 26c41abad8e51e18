"""The PyTorch training loop that every raykit worker runs (under TorchTrainer or alone in tests).

Data parallel: each rank trains on a disjoint shard of every epoch's shuffled order, DDP averages the
gradients, and validation metrics are summed over all ranks so they cover the whole split.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from raykit.backends.torch import checkpoint as ckpt
from raykit.backends.torch.models import build_model, to_model_layout
from raykit.data import Split, load_splits
from raykit.history import epoch_line, history_csv, is_improvement
from raykit.session import WorkerSession
from raykit.spec import OptimSpec, RunSpec
from raykit.storage import join, write_text


@dataclass
class Progress:
    """What a resume needs besides weights and optimizer: where we are and what we have seen."""

    epoch: int = 0  # epochs completed
    global_step: int = 0
    best_metric: float | None = None
    history: list[dict] = field(default_factory=list)

    def as_state(self) -> dict:
        return {"epoch": self.epoch, "global_step": self.global_step, "best_metric": self.best_metric,
                "history": self.history}


def fit(spec: RunSpec, session: WorkerSession) -> dict:
    """Train ``spec`` on this worker; return ``{"history": [...], "best_metric": ...}``."""
    device = worker_device(session)
    seed_everything(spec.train.seed)
    splits = load_splits(spec.data)
    num_classes = spec.model.num_classes or splits.num_classes
    model = build_model(spec.model, splits.input_shape, num_classes).to(device)
    optimizer = build_optimizer(spec.optim, model.parameters())
    progress = Progress()
    if session.resume_dir:
        progress = _resume(session, model, optimizer)
    else:
        seed_everything(spec.train.seed + session.rank)  # same init on all ranks, own dropout masks
    model = session.prepare_model(model)

    train = _to_device(splits.train, device)
    val = _to_device(splits.val.shard(session.rank, session.world_size), device)
    started = time.perf_counter()
    first_epoch = progress.epoch
    for epoch in range(first_epoch + 1, spec.train.epochs + 1):
        epoch_started = time.perf_counter()
        train_loss, train_acc, steps = _train_epoch(spec, session, model, optimizer, train, epoch, device)
        progress.global_step += steps
        val_loss, val_acc = _evaluate_sharded(model, val, device, spec.train.precision)
        seconds = time.perf_counter() - epoch_started
        metrics = {"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc, "val_loss": val_loss,
                   "val_acc": val_acc, "lr": optimizer.param_groups[0]["lr"], "epoch_time_s": seconds,
                   "samples_per_s": len(train[1]) / seconds, "global_step": progress.global_step}
        progress.epoch = epoch
        progress.history.append(metrics)
        if is_improvement(metrics[spec.checkpoint.monitor], progress.best_metric, spec.checkpoint.mode):
            progress.best_metric = metrics[spec.checkpoint.monitor]
        done = epoch - first_epoch
        session.log(epoch_line(metrics, spec.train.epochs, time.perf_counter() - started,
                               (time.perf_counter() - started) / done * (spec.train.epochs - epoch)))
        _report(spec, session, model, optimizer, progress, metrics)
    return {"history": progress.history, "best_metric": progress.best_metric}


def _resume(session: WorkerSession, model: nn.Module, optimizer: torch.optim.Optimizer) -> Progress:
    state, rng_states = ckpt.restore(session.resume_dir, model, optimizer)
    if len(rng_states) == session.world_size:
        ckpt.apply_rng(rng_states[session.rank])
    session.log(f"resuming after epoch {state['epoch']} from {session.resume_dir}")
    return Progress(**state)


def _report(spec: RunSpec, session: WorkerSession, model: nn.Module, optimizer: torch.optim.Optimizer,
            progress: Progress, metrics: dict) -> None:
    """Report this epoch's metrics on every rank, with a checkpoint from rank 0 when one is due."""
    epoch = progress.epoch
    due = epoch % spec.checkpoint.every_n_epochs == 0 or epoch == spec.train.epochs
    rng_states = _gather(ckpt.capture_rng(), session) if due else []
    directory = None
    if session.is_chief:
        if session.run_dir:
            write_text(join(session.run_dir, "metrics.csv"), history_csv(progress.history))
        if due:
            directory = tempfile.mkdtemp(prefix=f"raykit-ckpt-{epoch:04d}-")
            ckpt.save(directory, model=model, optimizer=optimizer, state=progress.as_state(),
                      metrics=metrics, rng_states=rng_states, spec=spec.to_dict())
    try:
        session.report(metrics, directory)
    finally:
        if directory:
            shutil.rmtree(directory, ignore_errors=True)


def _train_epoch(spec: RunSpec, session: WorkerSession, model: nn.Module, optimizer: torch.optim.Optimizer,
                 train: tuple[torch.Tensor, torch.Tensor], epoch: int, device: torch.device
                 ) -> tuple[float, float, int]:
    x, y = train
    order = epoch_order(len(y), spec.train.seed, epoch, session.rank, session.world_size).to(device)
    batch = spec.per_worker_batch_size
    model.train()
    totals = torch.zeros(3, device=device, dtype=torch.float64)  # loss sum, correct, samples
    steps = 0
    for start in range(0, len(order), batch):
        index = order[start:start + batch]
        images, labels = x[index], y[index]
        with _autocast(device, spec.train.precision):
            logits = model(images)
            loss = nn.functional.cross_entropy(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        steps += 1
        totals += torch.stack([loss.detach().double() * len(labels),
                               (logits.argmax(1) == labels).sum().double(),
                               torch.tensor(len(labels), device=device, dtype=torch.float64)])
    totals = _all_reduce(totals, session.world_size)
    return float(totals[0] / totals[2]), float(totals[1] / totals[2]), steps


def epoch_order(n: int, seed: int, epoch: int, rank: int, world_size: int) -> torch.Tensor:
    """This rank's sample indices for ``epoch``: a seeded shuffle, trimmed so that every rank gets the
    same number (DDP needs equal step counts), then every ``world_size``-th item from ``rank``."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(n, generator=generator)
    order = order[: n - n % world_size]
    return order[rank::world_size]


@torch.no_grad()
def _evaluate_sharded(model: nn.Module, split: tuple[torch.Tensor, torch.Tensor], device: torch.device,
                      precision: str, world_size: int | None = None) -> tuple[float, float]:
    totals = evaluate_totals(model, split, device, precision)
    totals = _all_reduce(totals, dist.get_world_size() if dist.is_initialized() else 1)
    return float(totals[0] / totals[2]), float(totals[1] / totals[2])


@torch.no_grad()
def evaluate_totals(model: nn.Module, split: tuple[torch.Tensor, torch.Tensor], device: torch.device,
                    precision: str, batch_size: int = 1024) -> torch.Tensor:
    """Sum of loss, number correct, and number of samples over ``split`` (float64 tensor of 3)."""
    model.eval()
    x, y = split
    totals = torch.zeros(3, device=device, dtype=torch.float64)
    for start in range(0, len(y), batch_size):
        images, labels = x[start:start + batch_size], y[start:start + batch_size]
        with _autocast(device, precision):
            logits = model(images)
        loss = nn.functional.cross_entropy(logits.float(), labels, reduction="sum")
        totals += torch.stack([loss.double(), (logits.argmax(1) == labels).sum().double(),
                               torch.tensor(len(labels), device=device, dtype=torch.float64)])
    return totals


def evaluate_checkpoint(spec: RunSpec, checkpoint_dir: str, split: str = "test", use_gpu: bool = False) -> dict:
    """Loss and accuracy of a checkpoint's model on one split of ``spec.data`` (single process)."""
    device = torch.device("cuda") if use_gpu and torch.cuda.is_available() else torch.device("cpu")
    splits = load_splits(spec.data)
    model = build_model(spec.model, splits.input_shape, spec.model.num_classes or splits.num_classes)
    model.load_state_dict(ckpt.load_weights(checkpoint_dir))
    data = _to_device(splits.get(split), device)
    totals = evaluate_totals(model.to(device), data, device, spec.train.precision)
    return {f"{split}_loss": float(totals[0] / totals[2]), f"{split}_acc": float(totals[1] / totals[2]),
            f"{split}_samples": int(totals[2])}


def build_optimizer(spec: OptimSpec, parameters) -> torch.optim.Optimizer:
    if spec.name == "sgd":
        return torch.optim.SGD(parameters, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)
    if spec.name == "adamw":
        return torch.optim.AdamW(parameters, lr=spec.lr, weight_decay=spec.weight_decay)
    return torch.optim.Adam(parameters, lr=spec.lr, weight_decay=spec.weight_decay)


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


def _autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def _to_device(split: Split, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Images in the model's NCHW layout (converted once, not per batch) and labels, on ``device``."""
    return to_model_layout(torch.from_numpy(split.x)).to(device), torch.from_numpy(split.y).to(device)


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
