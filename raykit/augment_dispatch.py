"""The augmentation op dispatch, written once for every backend: walk the ops, call the backend's kernels.

Framework-neutral (stdlib only). A backend implements the catalogue of :mod:`raykit.augment` as a
:class:`Kernels`: one table ``{op: function}`` for each kind of op, a ``warp`` and an ``op_rng``; its
``Augmenter`` is a :class:`BaseAugmenter` over those kernels. What happens to a training batch is the
same in every backend:

* consecutive matrix ops (:data:`~raykit.augment.MATRIX_OPS`: rotate, shift, shear, zoom) each give one
  (N, 3, 3) output->input map per sample; the maps compose (``earlier @ later``) and the images are
  resampled once, before the next other op or at the end;
* batch ops (:data:`~raykit.augment.BATCH_OPS`: mixup, cutmix) mix the whole batch and its targets;
* every other op is a pixel op and changes the images; a user op (``package.module:function``) is one too,
  its function called as ``function(images, rng, **params)`` with the op's random source;
* at evaluation only :data:`~raykit.augment.DETERMINISTIC_OPS` (normalize) run, in order, without randomness.

Kernel signatures (tensors are the backend's own; ``rng`` is ``op_rng(batch_rng, index)`` for the op
at ``index`` of the augmenter's ops)::

    matrix kernel:  (op, images, rng) -> (N, 3, 3) maps
    pixel kernel:   (op, images, rng) -> images            (rng is None at evaluation)
    batch kernel:   (op, images, targets, rng, num_classes) -> (images, targets)

``op_rng`` is where the backends' randomness differs: torch draws every op in turn from one stateful
``torch.Generator`` (it returns the generator itself), TensorFlow folds the op's index into the batch's
stateless seed (so the ops can trace inside a ``tf.function``).

Example (a backend module)::

    KERNELS = Kernels("torch", matrix={"rotate": _rotate, ...}, pixel={...}, batch={...},
                      warp=warp, op_rng=lambda generator, index: generator)
    class Augmenter(BaseAugmenter): ...
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable, Mapping

from raykit.augment import (BATCH_OPS, DETERMINISTIC_OPS, MATRIX_OPS, OPS, import_user_op, is_user_op,
                            resolve_ops, user_op_form)

KINDS = ("matrix", "pixel", "batch")


def op_kind(name: str) -> str:
    """Which kernel table implements op ``name``: ``matrix``, ``batch``, ``user`` (a ``package.module:function``
    op, run as a pixel op) or (every other op) ``pixel``."""
    if is_user_op(name):
        return "user"
    if name in MATRIX_OPS:
        return "matrix"
    return "batch" if name in BATCH_OPS else "pixel"


@dataclass(frozen=True)
class Kernels:
    """One backend's implementation of the catalogue: three kernel tables and two primitives.

    Attributes:
        backend: the framework's name, as errors show it (``"torch"``, ``"tf"``).
        matrix, pixel, batch: ``{op: kernel}`` for the ops of each kind (see the module docstring).
        warp: ``(images, maps) -> images``, resampling with the composed (N, 3, 3) output->input maps.
        op_rng: ``(batch_rng, index) -> rng``, the random source of the op at ``index``.
        run_transform: ``(transform, op name) -> kernel`` for a user factory's transform: the kernel runs it on
            the images with its randomness seeded from the op's random source.
    """

    backend: str
    matrix: Mapping[str, Callable]
    pixel: Mapping[str, Callable]
    batch: Mapping[str, Callable]
    warp: Callable[[Any, Any], Any]
    op_rng: Callable[[Any, int], Any]
    run_transform: Callable[[Any, str], Callable]

    def names(self) -> dict[str, list[str]]:
        """``{kind: [op, ...]}``: the ops this backend has a kernel for, by table."""
        return {kind: list(getattr(self, kind)) for kind in KINDS}

    def missing(self) -> list[str]:
        """The catalogue's ops that have no kernel in the table of their kind (empty when complete)."""
        return [name for name in OPS if name not in getattr(self, op_kind(name))]

    def user_kernel(self, op: dict) -> Callable:
        """The pixel kernel of user op ``op`` (see :func:`raykit.augment.user_op_problems`): its function called
        as ``function(images, rng, **params)`` with the op's own random source, or its factory's transform
        (``function(**params)``, called now) run by :attr:`run_transform`.

        Raises:
            ImportError: the function cannot be imported (validation reports it before a run starts).
            TypeError: neither form binds, or (from ``run_transform``) the factory made no usable transform.
        """
        function = import_user_op(op["op"])
        params = {key: value for key, value in op.items() if key != "op"}
        if user_op_form(function, params) == "factory":
            return self.run_transform(function(**params), op["op"])

        def kernel(_: dict, images: Any, rng: Any) -> Any:
            return function(images, rng, **params)
        return kernel

    def kernel(self, name: str) -> Callable:
        """The kernel of op ``name``.

        Raises:
            ValueError: no kernel of that name in the table of its kind, naming the op, the backend and
                the ops it implements (an op from outside the catalogue, or one the backend lacks).
        """
        kernel = getattr(self, op_kind(name)).get(name)
        if kernel is None:
            implemented = ", ".join(op for op in OPS if op in getattr(self, op_kind(op)))
            raise ValueError(f"augment: op {name!r} has no {self.backend} kernel; accepted by the "
                             f"{self.backend} backend: {implemented}")
        return kernel


class BaseAugmenter:
    """Applies resolved ops (see :func:`raykit.augment.resolve_ops`) with one backend's :class:`Kernels`.

    Each backend subclasses it with its own ``train_batch(images, labels, <random source>)`` that calls
    :meth:`augment`; :meth:`eval_batch` and :attr:`is_identity` are shared.

    Raises:
        AugmentError: ``ops`` are not valid ops of the catalogue.
        ValueError: an op has no kernel in this backend (see :meth:`Kernels.kernel`).
    """

    def __init__(self, ops: list[dict], num_classes: int, kernels: Kernels):
        self.ops = resolve_ops("none", ops)  # idempotent on resolved ops; fills partial ones
        self.num_classes = num_classes
        self.kernels = kernels
        # user ops' kernels by index; every other op's kernel looked up now, to refuse a missing one early
        self.user_kernels = {index: kernels.user_kernel(op) for index, op in enumerate(self.ops)
                             if is_user_op(op["op"])}
        for op in self.ops:
            if not is_user_op(op["op"]):
                kernels.kernel(op["op"])

    @property
    def is_identity(self) -> bool:
        """True when there are no ops: training and evaluation batches pass through unchanged."""
        return not self.ops

    def augment(self, images: Any, targets: Any, rng: Any) -> tuple[Any, Any]:
        """Every op in order on a training batch; ``targets`` change only where a batch op fires."""
        kernels, pending = self.kernels, None  # pending: composed maps of the matrix ops not applied yet
        for index, op in enumerate(self.ops):
            name, kind = op["op"], op_kind(op["op"])
            kernel = self.user_kernels[index] if kind == "user" else kernels.kernel(name)
            op_rng = kernels.op_rng(rng, index)
            if kind == "matrix":
                maps = kernel(op, images, op_rng)
                pending = maps if pending is None else pending @ maps
                continue
            if pending is not None:
                images, pending = kernels.warp(images, pending), None
            if kind == "batch":
                images, targets = kernel(op, images, targets, op_rng, self.num_classes)
            else:
                images = kernel(op, images, op_rng)
        if pending is not None:
            images = kernels.warp(images, pending)
        return images, targets

    def eval_batch(self, images: Any) -> Any:
        """Apply only the deterministic ops (normalize), in order; everything else is training-only."""
        for op in self.ops:
            if op["op"] in DETERMINISTIC_OPS:
                images = self.kernels.kernel(op["op"])(op, images, None)
        return images


def jitter_adjustments(color: ModuleType) -> dict[str, tuple[Callable, Callable[[float], tuple[float, float]]]]:
    """color_jitter's adjustments in their canonical order, ``{name: (adjust, strength -> factor range)}``, with
    ``color`` a backend's colour module (``adjust_brightness(images, factor)``, ...)."""
    def around_one(strength: float) -> tuple[float, float]:
        return max(0.0, 1.0 - strength), 1.0 + strength

    return {"brightness": (color.adjust_brightness, around_one), "contrast": (color.adjust_contrast, around_one),
            "saturation": (color.adjust_saturation, around_one),
            "hue": (color.adjust_hue, lambda strength: (-strength, strength))}


def policy_pixel_ops(color: ModuleType, magnitude: Any) -> dict[str, Callable[[Any], Any]]:
    """The non-geometric ops of :data:`~raykit.augment.AUGMENT_POLICY_OPS` as ``images -> images`` at the
    per-sample ``magnitude`` (a backend tensor), with ``color`` a backend's colour module: torchvision's
    factor ``1 + magnitude`` for the enhancements, bits for posterize, the threshold for solarize."""
    return {"brightness": lambda images: color.adjust_brightness(images, 1.0 + magnitude),
            "color": lambda images: color.adjust_saturation(images, 1.0 + magnitude),
            "contrast": lambda images: color.adjust_contrast(images, 1.0 + magnitude),
            "sharpness": lambda images: color.adjust_sharpness(images, 1.0 + magnitude),
            "posterize": lambda images: color.posterize(images, magnitude),
            "solarize": lambda images: color.solarize(images, magnitude),
            "autocontrast": color.autocontrast, "equalize": color.equalize}
