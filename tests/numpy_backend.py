"""A third backend, written for the tests: NumPy only, a linear softmax classifier with hand-written
gradients. It proves that a framework is one class implementing :class:`raykit.backends.base.Backend`
plus one :func:`raykit.backends.register` call — the engine, the spec, checkpoints, evaluation and
export run it unchanged (tests/test_backend_contract.py).

One rank only (its collectives are the identity), SGD with momentum, ``normalize`` as its only
augmentation, checkpoints as ``.npz`` files, export as an ``.npz`` of the weights.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from raykit.augment import DETERMINISTIC_OPS, resolve_ops
from raykit.backends import register
from raykit.backends.base import GRAD_ACCUM, Backend, BackendInfo, EpochTotals
from raykit.checkpoint import read_manifest, write_manifest
from raykit.data import to_float
from raykit.schedules import lr_multiplier

WEIGHTS, OPTIMIZER, RNG = "weights.npz", "optimizer.npz", "rng.json"


def refusals(spec) -> list[tuple[str, str]]:
    problems = []
    if spec.scaling.num_workers != 1:
        problems.append(("scaling.num_workers", f"got {spec.scaling.num_workers} with framework numpy; accepted: 1"))
    if spec.train.loss != "cross_entropy":  # its gradients are written by hand for cross entropy
        problems.append(("train.loss", f"got {spec.train.loss!r} with framework numpy; accepted: cross_entropy"))
    for op in resolve_ops(spec.augment.preset, spec.augment.ops):
        if op["op"] not in DETERMINISTIC_OPS:
            problems.append(("augment", f"got op {op['op']!r} with framework numpy; accepted: normalize only"))
    return problems


INFO = BackendInfo(
    name="numpy", implementation="tests.numpy_backend:NumpyBackend", trainer="data_parallel",
    description="NumPy reference backend (tests only): a linear softmax classifier",
    model_names=("linear",), optimizer_names=("sgd",), export_formats=("npz",),
    capabilities=frozenset({GRAD_ACCUM}), refusals=refusals,
)


def register_numpy_backend() -> BackendInfo:
    """The one registration line a new backend needs."""
    return register(INFO)


class NumpyBackend(Backend):
    info = INFO

    # --- set-up -----------------------------------------------------------------------------------
    def seed(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def build(self, data_info, steps_per_epoch: int) -> None:
        features = math.prod(data_info.input_shape)
        self.params = {"w": self.rng.normal(0.0, 0.01, (features, data_info.num_classes)),
                       "b": np.zeros(data_info.num_classes)}
        self.velocity = {name: np.zeros_like(value) for name, value in self.params.items()}
        self.multiplier = lr_multiplier(self.spec.optim, steps_per_epoch, steps_per_epoch * self.spec.train.epochs)
        self.preprocess = _normalizer(self.spec)
        self.frozen: list[str] = []

    def load_initial_weights(self) -> str | None:
        source = self.spec.finetune.init_from
        if source == "scratch":
            return None
        self.params = _load_weights(source)
        return f"loaded w, b from {source}"

    def restore(self, directory: str) -> tuple[dict, list]:
        manifest = read_manifest(directory)
        self.params = _load_weights(directory)
        with np.load(Path(directory) / OPTIMIZER, allow_pickle=False) as saved:
            self.velocity = {name: saved[name] for name in self.velocity}
        return manifest["state"], json.loads((Path(directory) / RNG).read_text())

    def freezable_layers(self) -> list[str]:
        return ["linear"] if self.spec.finetune.freeze_first_n else []

    def set_frozen(self, names: list[str]) -> None:
        self.frozen = names

    # --- data -------------------------------------------------------------------------------------
    def to_arrays(self, x: np.ndarray, y: np.ndarray):
        return to_float(x).reshape(len(x), -1).astype(np.float64), np.asarray(y, np.int64)

    def take(self, arrays, index: np.ndarray):
        return arrays[0][index], arrays[1][index]

    def batch(self, x: np.ndarray, y: np.ndarray):
        return self.to_arrays(x, y)

    # --- training ---------------------------------------------------------------------------------
    def train_epoch(self, batches, epoch: int, first_step: int, on_batch) -> EpochTotals:
        accum = self.spec.train.grad_accum_steps
        grads = {name: np.zeros_like(value) for name, value in self.params.items()}
        loss_sum = correct = samples = 0.0
        steps = 0
        for index, (x, y) in enumerate(batches):
            logits = self._logits(x)
            probabilities = _softmax(logits)
            loss_sum += -np.log(probabilities[np.arange(len(y)), y] + 1e-12).sum()
            correct += float((logits.argmax(1) == y).sum())
            samples += len(y)
            delta = probabilities
            delta[np.arange(len(y)), y] -= 1.0
            delta /= len(y) * accum
            grads["w"] += self.preprocess(x).T @ delta
            grads["b"] += delta.sum(axis=0)
            if (index + 1) % accum == 0:
                self._step(grads, first_step + steps)
                grads = {name: np.zeros_like(value) for name, value in grads.items()}
                steps += 1
            on_batch(index, len(y))
        if any(g.any() for g in grads.values()):  # a last, partial accumulation
            self._step(grads, first_step + steps)
            steps += 1
        return EpochTotals(loss_sum, correct, int(samples), steps)

    def _step(self, grads: dict, step: int) -> None:
        if self.frozen:
            return
        lr = self.spec.optim.lr * self.multiplier(step)
        for name, grad in grads.items():
            self.velocity[name] = self.spec.optim.momentum * self.velocity[name] + grad
            self.params[name] -= lr * self.velocity[name]

    def _logits(self, x: np.ndarray) -> np.ndarray:
        return self.preprocess(x) @ self.params["w"] + self.params["b"]

    def evaluate_batches(self, batches):
        """Per batch (loss sum, logits, labels); the engine adds them up (the contract's evaluate_totals)."""
        for x, y in batches:
            logits = self._logits(x)
            yield -np.log(_softmax(logits)[np.arange(len(y)), y] + 1e-12).sum(), logits, y

    def learning_rate(self, global_step: int) -> float:
        return self.spec.optim.lr * self.multiplier(global_step)

    # --- collectives: one rank ----------------------------------------------------------------------
    def all_reduce_sum(self, values: np.ndarray) -> np.ndarray:
        return np.asarray(values, np.float64)

    def gather(self, value: dict) -> list[dict]:
        return [value]

    # --- checkpoints --------------------------------------------------------------------------------
    def capture_rng(self) -> dict:
        return {"numpy": self.rng.bit_generator.state}

    def apply_rng(self, state: dict) -> None:
        self.rng.bit_generator.state = state["numpy"]

    def save_checkpoint(self, directory: str, *, state: dict, metrics: dict, spec: dict, rng_states: list) -> None:
        root = Path(directory)
        np.savez(root / WEIGHTS, **self.params)
        np.savez(root / OPTIMIZER, **self.velocity)
        (root / RNG).write_text(json.dumps(rng_states))
        write_manifest(root, framework=self.info.name, state=state, metrics=metrics, spec=spec, weights=WEIGHTS)

    # --- inference ----------------------------------------------------------------------------------
    @classmethod
    def inference_model(cls, spec, checkpoint_dir: str, input_shape, num_classes: int, use_gpu: bool = False):
        read_manifest(checkpoint_dir)
        return {**_load_weights(checkpoint_dir), "preprocess": _normalizer(spec)}

    @classmethod
    def logits(cls, model, images: np.ndarray) -> np.ndarray:
        x = to_float(images).reshape(len(images), -1).astype(np.float64)
        return (model["preprocess"](x) @ model["w"] + model["b"]).astype(np.float32)

    @classmethod
    def export(cls, spec, checkpoint_dir: str, input_shape, num_classes: int, out_stem: str, formats: list[str]):
        model = cls.inference_model(spec, checkpoint_dir, input_shape, num_classes)
        path = out_stem + ".npz"
        np.savez(path, w=model["w"], b=model["b"])

        def logits_of(images: np.ndarray) -> np.ndarray:
            with np.load(path, allow_pickle=False) as saved:
                return cls.logits({"w": saved["w"], "b": saved["b"], "preprocess": model["preprocess"]}, images)

        return {"npz": (path, logits_of)}


def _load_weights(directory: str) -> dict:
    with np.load(Path(directory) / WEIGHTS, allow_pickle=False) as saved:
        return {"w": saved["w"].copy(), "b": saved["b"].copy()}


def _normalizer(spec):
    """The spec's normalize ops on flattened grayscale pixels (one mean and std)."""
    ops = [op for op in resolve_ops(spec.augment.preset, spec.augment.ops) if op["op"] in DETERMINISTIC_OPS]

    def preprocess(x: np.ndarray) -> np.ndarray:
        for op in ops:
            x = (x - op["mean"][0]) / op["std"][0]
        return x

    return preprocess


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)
