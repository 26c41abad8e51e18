"""The torch backend's fast path: data as stored until it is on the device, the memory layout convolutions
run fastest in, kernel settings, and ``torch.compile`` with its compile time kept apart.

* Images travel as stored (NHWC, uint8 for decoded image files: a quarter of float32's bytes) to the
  device, through pinned memory and an asynchronous copy on a GPU; :func:`model_input` scales them and
  lays them out for the model there, in one pass. A split held in memory (:func:`hold_split`) stays uint8
  on a GPU, converted a batch at a time; on the CPU it is converted once, because there the conversion
  would take the very cores the model trains on.
* :func:`memory_format` decides ``train.channels_last``: ``auto`` is channels-last for any model with an
  ``nn.Conv2d`` (the cnn, the ResNets, user conv nets), the standard layout otherwise (the mlp). Both
  layouts compute the same values up to float rounding; kernels for channels-last are the faster ones on
  CPUs (oneDNN) and on GPUs (cuDNN, tensor cores).
* :func:`configure_kernels` turns cuDNN autotuning on for GPU runs, or, with ``train.deterministic``,
  turns everything timing-dependent off.
* :class:`CompiledModel` runs training steps and evaluation through ``torch.compile`` (``train.compile``),
  measures the steps during which a graph was compiled (reported as ``compile_s`` and kept out of epoch
  time and samples/s), reports graph breaks, and falls back to the eager model with one warning when
  compilation fails.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn


def configure_kernels(device: torch.device, deterministic: bool) -> None:
    """Process-wide kernel settings for this run (set both ways: a process may run several trials).

    Deterministic: deterministic algorithms (torch warns naming any op that has none), no cuDNN
    autotuning, a fixed cuBLAS workspace. Otherwise, on a GPU, cuDNN benchmarks the convolution
    algorithms for each new shape once and keeps the fastest, which can differ from run to run.
    """
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read when cuBLAS starts
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = device.type == "cuda" and not deterministic


def memory_format(setting: str, model: nn.Module) -> torch.memory_format:
    """``train.channels_last`` (on | off | auto: on when the model has a 2-D convolution) as a memory format."""
    on = setting == "on" or (setting == "auto" and any(isinstance(m, nn.Conv2d) for m in model.modules()))
    return torch.channels_last if on else torch.contiguous_format


def to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """``array`` as a tensor on ``device`` without converting it: shared with NumPy on the CPU, copied
    asynchronously from pinned memory to a GPU. Read-only arrays (Ray Data's) are fine: nothing writes
    into the result in place (:func:`model_input` and batch gathers make new tensors)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        tensor = torch.from_numpy(np.ascontiguousarray(array))
    if device.type == "cpu":
        return tensor
    if device.type == "cuda":
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)


def model_input(images: torch.Tensor, layout: torch.memory_format) -> torch.Tensor:
    """NHWC images (uint8 pixels, or floats in [0, 1]) -> float32 NCHW in [0, 1] with ``layout``'s strides,
    on the images' device, in one copy (uint8 is scaled after the copy, in place: the same float32 values
    as NumPy's ``x.astype(np.float32) / 255``)."""
    n, height, width, channels = images.shape
    out = torch.empty((n, channels, height, width), dtype=torch.float32, device=images.device,
                      memory_format=layout)
    out.copy_(images.permute(0, 3, 1, 2))
    if images.dtype == torch.uint8:
        out.div_(255.0)
    return out


@dataclass(frozen=True)
class HeldSplit:
    """A split's images on the device: as stored (``converted`` false: NHWC, converted per batch) or
    converted once to float32 in the model layout's physical order (NHWC for channels-last, else NCHW)."""

    images: torch.Tensor
    converted: bool
    layout: torch.memory_format


def hold_split(images: np.ndarray, device: torch.device, layout: torch.memory_format,
               convert: bool | None = None) -> HeldSplit:
    """A whole split on ``device``; ``convert`` (default: on the CPU only) converts it once."""
    convert = device.type == "cpu" if convert is None else convert
    tensor = to_device(images, device)
    if not convert:
        return HeldSplit(tensor, False, layout)
    floats = model_input(tensor, layout)
    physical = floats.permute(0, 2, 3, 1) if layout == torch.channels_last else floats  # a contiguous view
    return HeldSplit(physical, True, layout)


def gather(held: HeldSplit, rows: torch.Tensor) -> torch.Tensor:
    """The rows ``rows`` of a held split as the model's float32 NCHW input in its layout."""
    batch = held.images[rows]
    if not held.converted:
        return model_input(batch, held.layout)
    return batch.permute(0, 3, 1, 2) if held.layout == torch.channels_last else batch


def _dynamo_counters():
    from torch._dynamo.utils import counters

    return counters


class CompiledModel:
    """What trains and evaluates: the (DDP-wrapped) ``module`` itself, or ``torch.compile(module)``.

    Args:
        module: the model as trained eagerly (also the fallback).
        mode: ``train.compile``: off | default | max-autotune.
        log: where the one-line warnings go (rank 0's log).
        previous: the instance this one replaces when the model is re-wrapped (freezing changed): its
            compile seconds not yet reported, and its decision to run eagerly, carry over.
    """

    def __init__(self, module: nn.Module, mode: str, log: Callable[[str], None] = print,
                 previous: "CompiledModel | None" = None):
        self.module, self.mode, self.log = module, mode, log
        self.eager = mode == "off" or bool(previous and previous.eager)
        self.compile_s = previous.compile_s if previous else 0.0
        self.reported_breaks = previous.reported_breaks if previous else 0
        self.succeeded: set[bool] = set()  # module.training values for which a compiled call has succeeded
        self.forward = module if self.eager else torch.compile(module, mode=None if mode == "default" else mode)

    def train_step(self, step: Callable[[Callable], tuple]) -> tuple:
        """``step(forward)``: one batch's forward and backward through the compiled (or eager) model."""
        return self._call(step)

    def evaluate(self, images: torch.Tensor) -> torch.Tensor:
        return self._call(lambda forward: forward(images))

    def _call(self, work: Callable[[Callable], object]):
        if self.eager:
            return work(self.module)
        graphs = _dynamo_counters()["stats"]["unique_graphs"]
        started = time.perf_counter()
        try:
            result = work(self.forward)
        except Exception as exc:  # noqa: BLE001 -- only before the first compiled call in this mode succeeds
            if self.module.training in self.succeeded:
                raise
            self._fall_back(exc)
            return work(self.module)
        self.succeeded.add(self.module.training)
        if _dynamo_counters()["stats"]["unique_graphs"] != graphs:  # this call compiled (or recompiled) a graph
            self.compile_s += time.perf_counter() - started
        return result

    def _fall_back(self, error: Exception) -> None:
        first_line = (str(error).strip().splitlines() or [""])[0][:300]
        warnings.warn(f"train.compile={self.mode}: torch.compile failed ({type(error).__name__}: {first_line}); "
                      "training continues eagerly (train.compile: off)", RuntimeWarning, stacklevel=3)
        self.log(f"train.compile={self.mode}: compilation failed ({type(error).__name__}); training eagerly")
        self.eager, self.forward = True, self.module

    def epoch_report(self) -> dict:
        """``{"compile_s": seconds compiling since the last report, "graph_breaks": so far}`` (nothing when
        compilation is off); new graph-break reasons are logged once."""
        if self.mode == "off":
            return {}
        counters = _dynamo_counters()
        # torch files graph breaks under "unimplemented" (2.6+, a long explanation each) or "graph_break".
        breaks = {**counters["graph_break"], **counters["unimplemented"]}
        total = int(sum(breaks.values()))
        if total > self.reported_breaks:
            reasons = "; ".join(f"{reason.strip().splitlines()[0]} (x{count})"
                                for reason, count in list(breaks.items())[:5])
            self.log(f"train.compile: {total} graph break(s), each a return to Python between compiled "
                     f"graphs: {reasons}")
            self.reported_breaks = total
        seconds, self.compile_s = self.compile_s, 0.0
        return {"compile_s": seconds, "graph_breaks": total}
