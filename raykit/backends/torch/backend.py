"""The PyTorch backend: :class:`TorchBackend` implements :class:`raykit.backends.base.Backend`.

Data parallel: each rank trains on its shard of every epoch's order (from the engine), DDP (through the
session's ``prepare_model``) averages gradients, and the engine sums metrics over ranks with
:meth:`TorchBackend.all_reduce_sum`.

The fast path (:mod:`raykit.backends.torch.fast`): images stay as stored (uint8 for decoded image files) until
a batch is on the device, where they are scaled, put in the model's memory layout (channels-last for conv
nets), augmented and normalized; fused optimizers and cuDNN autotuning on GPUs; ``train.compile`` through
``torch.compile`` with the compile time kept apart; ``train.deterministic`` for bit-exact GPU resumes.
"""

from __future__ import annotations

import contextlib
import random
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from raykit.augment import resolve_ops
from raykit.backends.base import Backend, EpochTotals, with_last
from raykit.backends.torch import INFO
from raykit.backends.torch import checkpoint as ckpt
from raykit.backends.torch import export as exporting
from raykit.backends.torch import fast, finetune
from raykit.backends.torch import losses
from raykit.backends.torch.augment import build_augmenter, make_generator, preview_png
from raykit.backends.torch.models import build_model
from raykit.backends.torch.optim import build_optimizer
from raykit.data import to_float
from raykit.schedules import lr_multiplier

Batch = tuple[torch.Tensor, torch.Tensor]


class TorchBackend(Backend):
    info = INFO

    def __init__(self, spec, session):
        super().__init__(spec, session)
        self.device = worker_device(session.use_gpu, session.local_rank)
        fast.configure_kernels(self.device, spec.train.deterministic)
        self.wrapped: nn.Module | None = None  # the DDP-wrapped model
        self.compiled: fast.CompiledModel | None = None  # what trains and evaluates: wrapped, maybe compiled
        self.memory_format = torch.contiguous_format
        self.frozen: list[str] = []

    # --- set-up -----------------------------------------------------------------------------------
    def seed(self, seed: int) -> None:
        seed_everything(seed)

    def seed_rank(self, seed: int, rank: int) -> None:
        seed_everything(seed + rank)

    def build(self, data_info, steps_per_epoch: int) -> None:
        spec = self.spec
        model = build_model(spec.model, data_info.input_shape, data_info.num_classes)
        self.memory_format = fast.memory_format(spec.train.channels_last, model)
        self.model = model.to(self.device, memory_format=self.memory_format)
        groups = finetune.parameter_groups(self.model, spec.optim.lr, spec.finetune.backbone_lr_mult)
        self.optimizer = build_optimizer(spec.optim, groups, self.device)
        multiplier = lr_multiplier(spec.optim, steps_per_epoch, steps_per_epoch * spec.train.epochs)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, multiplier)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=spec.train.precision == "fp16")
        self.augmenter = build_augmenter(resolve_ops(spec.augment.preset, spec.augment.ops), data_info.num_classes,
                                         spec.train.seed)
        self.loss = losses.Loss(spec.train, data_info.num_classes)

    def load_initial_weights(self) -> str | None:
        report = finetune.load_initial_weights(self.spec, self.model)
        return report.summary() if report else None

    def restore(self, directory: str) -> tuple[dict, list]:
        return ckpt.restore(directory, self.model, self.optimizer, self.scheduler, self.scaler)

    def freezable_layers(self) -> list[str]:
        return finetune.frozen_layer_names(self.model, self.spec.finetune)

    def set_frozen(self, names: list[str]) -> None:
        """Freeze ``names`` and re-wrap for DDP, which only synchronises the parameters that required
        gradients when it was built."""
        finetune.apply_freezing(self.model, names)
        self.frozen = names
        self.wrapped = self.session.prepare_model(self.model)
        self.compiled = fast.CompiledModel(self.wrapped, self.spec.train.compile, log=self.session.log,
                                           previous=self.compiled)

    # --- data -------------------------------------------------------------------------------------
    def to_arrays(self, x: np.ndarray, y: np.ndarray) -> tuple[fast.HeldSplit, torch.Tensor]:
        """The split and its labels on the device: on a GPU as stored (uint8 pixels take a quarter of
        float32's memory; each batch is scaled and laid out there), on the CPU converted once."""
        return (fast.hold_split(x, self.device, self.memory_format),
                fast.to_device(np.asarray(y, np.int64), self.device))

    def take(self, arrays: tuple[fast.HeldSplit, torch.Tensor], index: np.ndarray) -> Batch:
        """Rows ``index``: float32 NCHW images in the model's layout, and labels."""
        rows = torch.from_numpy(index).to(self.device, non_blocking=True)
        return fast.gather(arrays[0], rows), arrays[1][rows]

    def batch(self, x: np.ndarray, y: np.ndarray) -> Batch:
        """A streamed batch as the model's input: moved as it arrived (uint8 stays uint8; to a GPU from
        pinned memory, asynchronously), then scaled and laid out on the device in one pass."""
        return (fast.model_input(fast.to_device(x, self.device), self.memory_format),
                fast.to_device(np.asarray(y, np.int64), self.device))

    # --- training ---------------------------------------------------------------------------------
    def train_epoch(self, batches: Iterable, epoch: int, first_step: int,
                    on_batch: Callable[[int, int], None]) -> EpochTotals:
        spec, device, model = self.spec, self.device, self.compiled
        generator = make_generator(device, spec.train.seed, epoch, self.session.rank)
        accum = spec.train.grad_accum_steps
        self.wrapped.train()
        finetune.keep_frozen_norms_in_eval(self.model, self.frozen)
        totals = torch.zeros(3, device=device, dtype=torch.float64)  # loss sum, correct, samples
        steps = 0
        self.optimizer.zero_grad(set_to_none=True)
        for index, ((batch_x, labels), is_last) in enumerate(with_last(batches)):
            images, targets = self.augmenter.train_batch(batch_x, labels, generator)
            images = images.contiguous(memory_format=self.memory_format)  # warps return standard strides
            last_of_step = (index + 1) % accum == 0 or is_last
            # Between optimizer steps, skip DDP's all-reduce: gradients only need averaging once per step.
            sync = contextlib.nullcontext() if last_of_step or not hasattr(self.wrapped, "no_sync") \
                else self.wrapped.no_sync()
            with sync:
                logits, loss = model.train_step(lambda forward: self._loss(forward, images, targets, accum))
            if last_of_step:
                self._optimizer_step()
                steps += 1
            totals += torch.stack([loss.detach().double() * len(labels), (logits.argmax(1) == labels).sum().double(),
                                   torch.tensor(len(labels), device=device, dtype=torch.float64)])
            on_batch(index, len(labels))
        loss_sum, correct, samples = totals.tolist()
        return EpochTotals(loss_sum, correct, int(samples), steps)

    def _loss(self, forward, images: torch.Tensor, targets: torch.Tensor, accum: int):
        """One batch's forward and backward through ``forward`` (the compiled or the eager model)."""
        with autocast(self.device, self.spec.train.precision):
            logits = forward(images)
        loss = self.loss.batch_mean(logits.float(), targets)  # float32, outside autocast, as a user loss expects
        self.scaler.scale(loss / accum).backward()
        return logits, loss

    def _optimizer_step(self) -> None:
        if self.spec.optim.grad_clip_norm:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.spec.optim.grad_clip_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def after_validation(self) -> dict:
        """Peak GPU memory this worker's tensors held so far (MiB), on a CUDA device; with
        ``train.compile``, the seconds spent compiling this epoch (``compile_s``, which the engine keeps
        out of epoch_time_s and samples_per_s) and the graph breaks so far."""
        extra = self.compiled.epoch_report() if self.compiled else {}
        if self.device.type == "cuda":
            extra["peak_gpu_mb"] = torch.cuda.max_memory_allocated(self.device) / 2**20
        return extra

    def evaluate_totals(self, batches: Iterable) -> np.ndarray:
        """Summed on the device: one copy to the host at the end."""
        totals = torch.zeros(3, device=self.device, dtype=torch.float64)
        for loss, logits, labels in self._evaluated(batches):
            totals += torch.stack([loss.double(), (logits.argmax(1) == labels).sum().double(),
                                   torch.tensor(len(labels), device=self.device, dtype=torch.float64)])
        return totals.cpu().numpy()

    def evaluate_batches(self, batches: Iterable) -> Iterator[tuple[float, np.ndarray, np.ndarray]]:
        """One copy of each batch's logits to the host (only asked for when train.metrics needs them)."""
        for loss, logits, labels in self._evaluated(batches):
            yield float(loss), logits.cpu().numpy(), labels.cpu().numpy()

    @torch.no_grad()
    def _evaluated(self, batches: Iterable) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """(loss sum, float32 logits, labels) of each batch, on the device, with the model in eval mode."""
        model, device = self.compiled, self.device
        self.wrapped.eval()
        for batch_x, labels in batches:
            images = self.augmenter.eval_batch(batch_x).contiguous(memory_format=self.memory_format)
            with autocast(device, self.spec.train.precision):
                logits = model.evaluate(images).float()
            yield self.loss.label_sum(logits, labels), logits, labels

    def learning_rate(self, global_step: int) -> float:
        return float(self.optimizer.param_groups[0]["lr"])  # LambdaLR has stepped to global_step

    # --- collectives ------------------------------------------------------------------------------
    def all_reduce_sum(self, values: np.ndarray) -> np.ndarray:
        if self.session.world_size == 1 or not dist.is_initialized():
            return np.asarray(values, np.float64)
        tensor = torch.tensor(np.asarray(values, np.float64), device=self.device)
        dist.all_reduce(tensor)
        return tensor.cpu().numpy()

    def gather(self, value: dict) -> list[dict]:
        if self.session.world_size == 1 or not dist.is_initialized():
            return [value]
        gathered: list = [None] * self.session.world_size
        dist.all_gather_object(gathered, value)
        return gathered

    # --- checkpoints ------------------------------------------------------------------------------
    def capture_rng(self) -> dict:
        return ckpt.capture_rng()

    def apply_rng(self, state: dict) -> None:
        ckpt.apply_rng(state)

    def save_checkpoint(self, directory: str, *, state: dict, metrics: dict, spec: dict, rng_states: list) -> None:
        ckpt.save(directory, model=self.model, optimizer=self.optimizer, scheduler=self.scheduler,
                  scaler=self.scaler, state=state, metrics=metrics, rng_states=rng_states, spec=spec)

    # --- inference --------------------------------------------------------------------------------
    @classmethod
    def inference_model(cls, spec, checkpoint_dir: str, input_shape, num_classes: int, use_gpu: bool = False):
        device = worker_device(use_gpu and torch.cuda.is_available(), 0)
        model = exporting.load_inference_model(spec, checkpoint_dir, input_shape, num_classes)
        # The layout training used (channels-last for conv nets): the seed CNN's test pass 1.7x faster on CPU.
        model.model.to(memory_format=fast.memory_format(spec.train.channels_last, model.model))
        return model.to(device)

    @classmethod
    @torch.no_grad()
    def logits(cls, model, images: np.ndarray) -> np.ndarray:
        device = next(model.parameters()).device
        batch = torch.from_numpy(np.require(to_float(images), requirements="W")).to(device)
        return model(batch).float().cpu().numpy()

    user_loss_sum = staticmethod(losses.user_loss_sum)
    export = staticmethod(exporting.export)
    augment_preview_png = staticmethod(preview_png)


def worker_device(use_gpu: bool, local_rank: int) -> torch.device:
    """This worker's GPU (by local rank) with ``use_gpu``, else the CPU."""
    if use_gpu:
        if not torch.cuda.is_available():
            raise RuntimeError("scaling.use_gpu is true but this worker sees no CUDA device")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
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
