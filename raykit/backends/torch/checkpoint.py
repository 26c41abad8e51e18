"""PyTorch checkpoint files inside a raykit checkpoint directory.

Layout: ``model.pt`` (the unwrapped model's state dict), ``optimizer.pt``, ``scheduler.pt``,
``scaler.pt`` (fp16 only), ``rng.json`` (Python, NumPy and torch RNG states of every rank) and
``manifest.json`` (see :mod:`raykit.checkpoint`; each file is hashed as it is written).
Everything is loaded with ``torch.load(weights_only=True)``: a checkpoint is data, never code.
"""

from __future__ import annotations

import io
import json
import pickle
import random
import re
from pathlib import Path

import numpy as np
import torch
from torch import nn

from raykit import faults
from raykit.checkpoint import CheckpointError, HashingWriter, UnsafeFileError, verifying, write_manifest

WEIGHTS = "model.pt"
OPTIMIZER = "optimizer.pt"
SCHEDULER = "scheduler.pt"
SCALER = "scaler.pt"
RNG = "rng.json"


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside a DDP wrapper."""
    return model.module if hasattr(model, "module") else model


def save(directory: str, *, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler, scaler, state: dict,
         metrics: dict, rng_states: list[dict], spec: dict) -> None:
    """Write a complete checkpoint into the empty directory ``directory`` (the manifest last). Every file
    is SHA-256'd as it is written, so the manifest needs no second pass over the bytes."""
    root = Path(directory)
    digests: dict[str, dict] = {}
    _write(root, WEIGHTS, digests, lambda out: torch.save(unwrap(model).state_dict(), out))
    faults.inject("between_checkpoint_files", epoch=state.get("epoch", 0), rank=0)  # only rank 0 writes
    _write(root, OPTIMIZER, digests, lambda out: torch.save(optimizer.state_dict(), out))
    _write(root, SCHEDULER, digests, lambda out: torch.save(scheduler.state_dict(), out))
    if scaler.is_enabled():
        _write(root, SCALER, digests, lambda out: torch.save(scaler.state_dict(), out))
    _write(root, RNG, digests, lambda out: out.write(json.dumps(rng_states).encode()))
    write_manifest(root, framework="torch", state=state, metrics=metrics, spec=spec, weights=WEIGHTS,
                   digests=digests)


def _write(root: Path, name: str, digests: dict, write) -> None:
    """``write(stream)`` the file ``root / name`` through a :class:`HashingWriter`; record its digest."""
    with open(root / name, "wb") as file, HashingWriter(file) as stream:
        write(stream)
    digests[name] = stream.entry()


def load_data(source: Path | bytes, name: str | None = None):
    """``torch.load(weights_only=True)`` of a file (or its bytes), on the CPU: tensors and plain containers
    only. A file that refers to any other Python object is refused unloaded, with an error naming it
    (``name``, by default the path), because unpickling that object would run code.

    Example: ``load_data(data, "finetune.init_from: 's3://bucket/resnet.pt'")``
    """
    name = name or str(source)
    try:
        return torch.load(io.BytesIO(source) if isinstance(source, bytes) else source, map_location="cpu",
                          weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's own message advises weights_only=False, i.e. running the code: give ours instead.
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if found:
            raise UnsafeFileError(f"{name}: refused: it holds a pickled reference to the Python object "
                                  f"{found.group(1)}, which would run code when loaded, not only tensors; raykit "
                                  "loads weights as data only (torch.load weights_only=True). Accepted: a file "
                                  "written by torch.save(model.state_dict(), path)") from None
        detail = re.search(r"WeightsUnpickler error:\s*(.+)", str(exc))
        raise CheckpointError(f"{name}: not a torch weights file that loads as data "
                              f"({detail.group(1).strip() if detail else exc})") from None


def load_weights(directory: str) -> dict[str, torch.Tensor]:
    """The model state dict of a verified checkpoint, on the CPU."""
    with verifying(directory):
        weights = load_data(Path(directory) / WEIGHTS)
    return weights


def restore(directory: str, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler,
            scaler) -> tuple[dict, list[dict]]:
    """Load weights, optimizer, schedule and grad-scaler state; return the trainer state and the
    per-rank RNG states. The files are verified while they are read, and nothing is applied before they
    all verified."""
    root = Path(directory)
    with verifying(directory) as manifest:
        weights, optimizer_state, scheduler_state = (load_data(root / name) for name in (WEIGHTS, OPTIMIZER, SCHEDULER))
        scaler_state = load_data(root / SCALER) if scaler.is_enabled() and (root / SCALER).is_file() else None
        rng_states = json.loads((root / RNG).read_text())
    unwrap(model).load_state_dict(weights)
    optimizer.load_state_dict(optimizer_state)
    scheduler.load_state_dict(scheduler_state)
    if scaler_state is not None:
        scaler.load_state_dict(scaler_state)
    return manifest["state"], rng_states


def capture_rng() -> dict:
    """This process's Python, NumPy and torch RNG states as JSON-ready data."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": _to_lists(random.getstate()),
             "numpy": [kind, keys.tolist(), pos, has_gauss, cached],
             "torch": torch.get_rng_state().tolist()}
    if torch.cuda.is_available():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def apply_rng(state: dict) -> None:
    """Restore RNG states captured by :func:`capture_rng`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


def _to_lists(value):
    if isinstance(value, tuple):
        return [_to_lists(v) for v in value]
    return value
