"""Keras checkpoint files inside a raykit checkpoint directory.

Layout: ``model.weights.h5`` (Keras's own weights format: what fine-tuning and export use),
``state.npz`` (every model variable, dropout seed states included, and every optimizer variable:
iterations, learning rate, moments), and ``manifest.json`` (see :mod:`raykit.checkpoint`). NumPy
archives are read with ``allow_pickle=False``: a checkpoint is data, never code.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from raykit import faults
from raykit.checkpoint import UnsafeFileError, read_manifest, write_manifest

WEIGHTS = "model.weights.h5"
STATE = "state.npz"


def _state_variables(model: keras.Model, optimizers: list) -> dict[str, list]:
    return {"model": list(model.variables), **{f"optimizer{i}": list(o.variables) for i, o in enumerate(optimizers)}}


def save(directory: str, *, model: keras.Model, optimizers: list, state: dict, metrics: dict, spec: dict) -> None:
    """Write a complete checkpoint into the empty ``directory`` (the manifest last)."""
    root = Path(directory)
    model.save_weights(root / WEIGHTS)
    faults.inject("between_checkpoint_files", epoch=state.get("epoch", 0), rank=0)  # only rank 0 writes
    arrays = {f"{group}/{index}": np.asarray(variable.numpy())
              for group, variables in _state_variables(model, optimizers).items()
              for index, variable in enumerate(variables)}
    np.savez(root / STATE, **arrays)
    write_manifest(root, framework="tf", state=state, metrics=metrics, spec=spec, weights=WEIGHTS)


def restore(directory: str, model: keras.Model, optimizers: list) -> dict:
    """Assign every saved model and optimizer variable; return the trainer state."""
    manifest = read_manifest(directory)
    path = Path(directory) / STATE
    with np.load(path, allow_pickle=False) as arrays:
        for group, variables in _state_variables(model, optimizers).items():
            saved = sorted((k for k in arrays.files if k.startswith(group + "/")), key=lambda k: int(k.split("/")[1]))
            if len(saved) != len(variables):
                raise ValueError(f"{directory}: {group} has {len(saved)} saved variables, the run has "
                                 f"{len(variables)}; the checkpoint belongs to another model or optimizer")
            for key, variable in zip(saved, variables):
                variable.assign(_numeric_array(arrays, key, path))
    return manifest["state"]


def _numeric_array(arrays, key: str, path: Path) -> np.ndarray:
    try:
        return arrays[key]
    except ValueError as exc:
        if "allow_pickle" not in str(exc):
            raise
        raise UnsafeFileError(f"{path}: refused: {key} is an array of pickled Python objects, which would run "
                              "code when loaded, not numbers; raykit loads checkpoints as data only "
                              "(np.load allow_pickle=False)") from None


def load_weights(directory: str, model: keras.Model) -> None:
    """Verified weights of a checkpoint into ``model``."""
    manifest = read_manifest(directory)
    model.load_weights(Path(directory) / manifest["weights"])
