"""Deployable copies of a torch checkpoint's model: TorchScript and ONNX (batch prediction is
:class:`raykit.engine.Predictor` over :meth:`TorchBackend.logits`).

An exported model takes what raykit's data gives: float32 images in [0, 1], NHWC (batch, height, width,
channels), and returns logits. The spec's evaluation-time preprocessing (``normalize`` ops) is inside it,
so its predictions equal the checkpoint's under ``raykit evaluate``.
"""

from __future__ import annotations

import contextlib
import warnings

import numpy as np
import torch
from torch import nn

from raykit.augment import resolve_ops
from raykit.backends.torch import checkpoint as ckpt
from raykit.backends.torch.augment import build_augmenter
from raykit.backends.torch.models import build_model, to_model_layout
from raykit.spec import RunSpec

FORMATS = {"torchscript": ".torchscript.pt", "onnx": ".onnx"}
DEFAULT_FORMATS = ("torchscript", "onnx")


class InferenceModel(nn.Module):
    """NHWC float images in [0, 1] -> the spec's eval preprocessing -> the model -> logits."""

    def __init__(self, model: nn.Module, augmenter):
        super().__init__()
        self.model = model
        self.augmenter = augmenter

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(self.augmenter.eval_batch(to_model_layout(images)))


def load_inference_model(spec: RunSpec, checkpoint_dir: str, input_shape, num_classes: int) -> InferenceModel:
    model = build_model(spec.model, tuple(input_shape), num_classes)
    model.load_state_dict(ckpt.load_weights(checkpoint_dir))
    augmenter = build_augmenter(resolve_ops(spec.augment.preset, spec.augment.ops), num_classes, spec.train.seed)
    return InferenceModel(model, augmenter).eval()


def export(spec: RunSpec, checkpoint_dir: str, input_shape, num_classes: int, out_stem: str,
           formats: list[str]) -> dict[str, tuple[str, object]]:
    """Write each of ``formats`` to ``out_stem + suffix`` (local); return ``{format: (path, logits_of)}``
    where ``logits_of(images)`` runs the exported program (to check it against the checkpoint)."""
    model = load_inference_model(spec, checkpoint_dir, input_shape, num_classes)
    example = torch.rand(2, *input_shape)
    written = {}
    for fmt in formats:
        path = out_stem + FORMATS[fmt]
        if fmt == "torchscript":
            with torch.no_grad(), _quiet_jit():
                traced = torch.jit.trace(model, example)
                torch.jit.save(traced, path)
            # The traced program is what was saved; raykit never loads TorchScript files (they carry code).
            written[fmt] = (path, _numpy_logits(traced))
        else:
            _export_onnx(model, example, path)
            written[fmt] = (path, load_exported(path))
    return written


def _numpy_logits(module):
    def logits(images):
        with torch.no_grad():
            return module(torch.from_numpy(np.asarray(images, np.float32))).numpy()

    return logits


@contextlib.contextmanager
def _quiet_jit():
    """TorchScript is what serving stacks load today, though torch marks torch.jit deprecated; and the
    normalize constants it warns about are meant to be constants. Neither warning helps a user."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        yield


def _export_onnx(model: nn.Module, example: torch.Tensor, path: str) -> None:
    try:
        import onnx  # noqa: F401  (torch's exporter needs it; say so plainly when it is missing)
    except ImportError:
        raise RuntimeError("format onnx needs the onnx and onnxscript packages: pip install 'raykit[onnx]'") from None
    batch = torch.export.Dim("batch", min=1)
    program = torch.onnx.export(model, (example,), dynamo=True, dynamic_shapes=({0: batch},),
                                input_names=["images"], output_names=["logits"])
    program.save(path)


def load_exported(path: str):
    """A callable NumPy images -> NumPy logits for an exported ONNX file (onnxruntime: a graph, no code).
    TorchScript files are not loaded by raykit: loading one runs the program it carries."""
    if not path.endswith(FORMATS["onnx"]):
        raise ValueError(f"{path}: raykit loads only .onnx exports back; load TorchScript with torch.jit.load "
                         "where you trust the file")
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    return lambda images: session.run(None, {"images": np.asarray(images, np.float32)})[0]

