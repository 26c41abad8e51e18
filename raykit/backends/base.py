"""The backend contract: what a deep-learning framework must provide for raykit to train with it, and
the facts about it that framework-neutral code needs without importing it.

Two halves, so that the driver stays light:

* :class:`BackendInfo` — plain facts (model and optimizer names, ImageNet weight files and where they are
  cached, export formats, capabilities, options it refuses and why, the Ray Train trainer that runs it).
  The spec's validation, the CLI and ``raykit/ray/`` read these; nothing here imports torch or TensorFlow.
* :class:`Backend` — the operations, implemented in ``raykit/backends/<name>/backend.py`` and imported
  only where training, evaluation or export really runs. :mod:`raykit.engine` drives them: it owns the
  epochs, the data order, metrics, early stopping, checkpoint cadence, faults and reporting; a backend
  owns the model, its optimizer and one epoch of steps.

A new framework is a folder that implements :class:`Backend` plus one :func:`raykit.backends.register`
call (``tests/numpy_backend.py`` is a complete one in about 200 lines: a linear model with hand-written
gradients).

Batches: the engine hands out NumPy index arrays; the backend turns a whole split into its own arrays
once (:meth:`Backend.to_arrays`, e.g. the stored uint8 pixels on the GPU) and gathers batches from them
(:meth:`Backend.take`), or converts a streamed NumPy batch (:meth:`Backend.batch`). Images reach the
backend as NHWC ``uint8`` or float arrays in [0, 1] (see :func:`raykit.data.to_float`).
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Iterator

import numpy as np

# Capabilities a backend may declare (BackendInfo.capabilities).
GRAD_ACCUM = "grad_accum"  # train.grad_accum_steps > 1
GPU = "gpu"  # scaling.use_gpu
PRETRAINED_THEN_INIT = "pretrained_then_init_from"  # model.pretrained and finetune.init_from together
Problems = list[tuple[str, str]]  # (spec field path, message), as SpecError takes them


@dataclass(frozen=True)
class BackendInfo:
    """Facts about one backend, known without importing its framework.

    Attributes:
        name: the value of ``spec.framework`` that picks it (``"torch"``).
        implementation: ``"package.module:Class"`` of its :class:`Backend`, imported on first use.
        trainer: the Ray Train trainer that runs its workers, by a name ``raykit/ray/`` resolves
            (``"torch"`` -> TorchTrainer, ``"tensorflow"`` -> TensorflowTrainer, ``"data_parallel"`` ->
            plain DataParallelTrainer).
        description: one line for the spec reference.
        model_names: names its model registry builds (a ``package.module:function`` factory also works).
        optimizer_names: names its optimizer registry builds.
        imagenet_files: model name -> file names of ImageNet weights in its cache.
        imagenet_fetch: ``imagenet_fetch(model_name)`` -> a command that downloads those weights once.
        model_zoos: the libraries' model zoos it builds from (:class:`ModelZoo`: ``timm:<name>``,
            ``keras:<name>``); the spec's rules check their names, their ImageNet weights and the framework
            from these alone. A zoo name is never a ``module:function`` factory.
        weights_cache: where its library keeps downloaded weights (computed from the environment).
        export_formats: ``raykit export`` formats, the first ones being the default.
        capabilities: optional features it has (:data:`GRAD_ACCUM`, :data:`GPU`, :data:`PRETRAINED_THEN_INIT`).
        refusals: ``refusals(spec) -> [(field, message)]``: option combinations it cannot run, and why.
        weights_check: ``weights_check(spec, input_shape, num_classes) -> [(field, message)]``: the starting
            weights (``model.pretrained`` there, ``finetune.init_from`` fitting the
            model) and whether the model takes the data's images at all, run once the data is planned,
            before Ray starts (it may import the framework, and fetch pretrained weights).
        required_modules: Python modules it needs installed (located before a run starts, never imported).
        install_name: what those modules are, for people (``"TensorFlow"``).
        install_extra: the raykit extra that installs them (``"tf"``: ``pip install 'raykit[tf]'``).
    """

    name: str
    implementation: str
    trainer: str
    description: str = ""
    model_names: tuple[str, ...] = ()
    optimizer_names: tuple[str, ...] = ()
    imagenet_files: dict[str, tuple[str, ...]] = field(default_factory=dict)
    weights_cache: Callable[[], Path] | None = None
    imagenet_fetch: Callable[[str], str] | None = None
    model_zoos: tuple["ModelZoo", ...] = ()
    export_formats: tuple[str, ...] = ()
    capabilities: frozenset[str] = frozenset()
    refusals: Callable[[Any], Problems] | None = None
    weights_check: Callable[[Any, tuple, int], Problems] | None = None
    required_modules: tuple[str, ...] = ()
    install_name: str = ""
    install_extra: str = ""

    def load(self) -> type["Backend"]:
        """The :class:`Backend` class (imports the framework)."""
        module_name, _, attribute = self.implementation.partition(":")
        return getattr(importlib.import_module(module_name), attribute)

    def weights_problems(self, spec, input_shape, num_classes: int) -> Problems:
        """:attr:`weights_check`'s problems of ``spec`` for this data (none when it has no check)."""
        return self.weights_check(spec, tuple(input_shape), num_classes) if self.weights_check else []

    def zoo_of(self, model_name: str) -> "ModelZoo | None":
        """The zoo of :attr:`model_zoos` whose prefix ``model_name`` starts with, or None."""
        return next((zoo for zoo in self.model_zoos if zoo.owns(model_name)), None)

    def imagenet_weights_file(self, model_name: str) -> Path | None:
        """The cached ImageNet weights of ``model_name`` on this machine, or None."""
        if self.weights_cache is None:
            return None
        for name in self.imagenet_files.get(model_name, ()):
            path = self.weights_cache() / name
            if path.is_file():
                return path
        return None


@dataclass(frozen=True)
class ModelZoo:
    """One library's models as ``model.name`` takes them, ``<prefix><name>`` (``timm:resnet50``): the facts the
    spec's rules need, known without building a model (and, where the library is a framework, without
    importing it). The rules (:mod:`raykit.spec.rules`) use them for every zoo alike: an unknown name gets
    the closest names, a name of another backend's zoo names that backend, and ``model.pretrained:
    imagenet`` needs :attr:`weights_file` to find the file.

    Attributes:
        prefix: ``"timm:"``.
        names: ``names()`` -> every name it has, without the prefix (may import the library; an
            ImportError says the library is missing).
        listing: where the names come from, for errors (``"timm.list_models()"``).
        weights_file: ``weights_file(name)`` -> (where its ImageNet weights are looked for, that path if the
            file is there, else None); LookupError when the library has no ImageNet weights for ``name``.
        fetch_command: ``fetch_command(name)`` -> the one command that puts those weights there.
        fetched_when_missing: ``fetched_when_missing()`` -> True when ``raykit.train`` downloads a missing
            file itself, before Ray starts (the backend's ``weights_check``); else a missing file is an
            error when the spec is read.
        why_not_fetched: why a missing file is not downloaded, for errors (``"raykit never downloads"``).
    """

    prefix: str
    names: Callable[[], tuple[str, ...]]
    listing: str
    weights_file: Callable[[str], tuple[Path, Path | None]]
    fetch_command: Callable[[str], str]
    fetched_when_missing: Callable[[], bool] = lambda: False
    why_not_fetched: Callable[[], str] = lambda: "raykit never downloads"

    def owns(self, model_name) -> bool:
        """``model_name`` is one of this zoo's (by its prefix; the name itself may still be unknown)."""
        return isinstance(model_name, str) and model_name.startswith(self.prefix)

    def bare(self, model_name: str) -> str:
        """``"resnet50"`` for ``"timm:resnet50"``."""
        return model_name[len(self.prefix):]


@dataclass
class EpochTotals:
    """What one training epoch of one rank adds up (summed over ranks by the engine)."""

    loss_sum: float  # sum over samples of the per-sample loss
    correct: float  # samples whose argmax matches the (hard) label
    samples: int
    steps: int  # optimizer steps taken

    def as_array(self) -> np.ndarray:
        return np.array([self.loss_sum, self.correct, self.samples], dtype=np.float64)


class Backend(ABC):
    """One rank's training with one framework. The engine calls, in order::

        backend = Backend(spec, session)          # framework set-up: threads, strategy, precision
        backend.seed(spec.train.seed)             # same seed on every rank: same initial weights
        backend.build(data_info, steps_per_epoch) # model, optimizer(s), LR schedule, augmenter
        backend.load_initial_weights() | backend.restore(dir)
        backend.seed_rank(spec.train.seed, rank)  # own dropout masks from here on
        per epoch: set_frozen(...); train_epoch(...); end_of_epoch();
                   evaluate_totals(...) or, for train.metrics, evaluate_batches(...); save_checkpoint(...)

    ``spec`` is a validated :class:`raykit.spec.RunSpec`; ``session`` a :class:`raykit.session.WorkerSession`.
    """

    info: ClassVar[BackendInfo]

    def __init__(self, spec, session):
        self.spec = spec
        self.session = session

    # --- set-up -----------------------------------------------------------------------------------
    @abstractmethod
    def seed(self, seed: int) -> None:
        """Seed every generator that initialises the model (the same ``seed`` on every rank)."""

    def seed_rank(self, seed: int, rank: int) -> None:
        """Reseed for per-rank randomness (dropout) once the weights are set; default: nothing."""

    @abstractmethod
    def build(self, data_info, steps_per_epoch: int) -> None:
        """Build the model for ``data_info`` (input shape, classes), its optimizer(s) and LR schedule
        (``steps_per_epoch`` optimizer steps an epoch), and the augmenter."""

    @abstractmethod
    def load_initial_weights(self) -> str | None:
        """Apply ``model.pretrained`` / ``finetune.init_from``; return a one-paragraph report, or None."""

    @abstractmethod
    def restore(self, directory: str) -> tuple[dict, list]:
        """Load a checkpoint's full state; return (trainer state, per-rank RNG states, possibly [])."""

    @abstractmethod
    def freezable_layers(self) -> list[str]:
        """Names of the layers the spec freezes at the start (see :func:`raykit.schedules.frozen_at_epoch`)."""

    @abstractmethod
    def set_frozen(self, names: list[str]) -> None:
        """Freeze exactly ``names``; (re)wrap or retrace what depends on the trainable set."""

    # --- data -------------------------------------------------------------------------------------
    @abstractmethod
    def to_arrays(self, x: np.ndarray, y: np.ndarray) -> Any:
        """A whole split, once, in the backend's own form (e.g. float tensors on its device)."""

    @abstractmethod
    def take(self, arrays: Any, index: np.ndarray) -> Any:
        """The batch of rows ``index`` of ``to_arrays``'s result."""

    @abstractmethod
    def batch(self, x: np.ndarray, y: np.ndarray) -> Any:
        """A batch of NumPy arrays (streamed data) in the backend's own form."""

    # --- training ---------------------------------------------------------------------------------
    @abstractmethod
    def train_epoch(self, batches: Iterable, epoch: int, first_step: int,
                    on_batch: Callable[[int, int], None]) -> EpochTotals:
        """Train on ``batches`` (this rank's); ``first_step`` is the global optimizer step the epoch
        starts at (for per-step learning rates); call ``on_batch(index, samples)`` after every batch."""

    def end_of_epoch(self) -> dict:
        """Work after an epoch's steps, before validation (e.g. averaging batch-norm statistics);
        returns extra metrics for the epoch's row (e.g. ``peak_gpu_mb``). Default: none."""
        return {}

    def after_validation(self) -> dict:
        """Extra metrics known after validation (e.g. ``weights_in_sync``). A ``compile_s`` among them is
        time spent compiling during the epoch, which the engine keeps out of epoch_time_s and samples/s.
        Default: none."""
        return {}

    def evaluate_totals(self, batches: Iterable) -> np.ndarray:
        """This rank's (loss sum, correct, samples) over ``batches`` with the model in eval mode: what the
        engine asks for when the spec wants no metric beyond loss and accuracy. Default: added up from
        :meth:`evaluate_batches` (a backend on an accelerator may keep the sums there instead)."""
        totals = np.zeros(3)
        for loss_sum, logits, labels in self.evaluate_batches(batches):
            totals += [loss_sum, np.sum(np.argmax(logits, 1) == labels), len(labels)]
        return totals

    @abstractmethod
    def evaluate_batches(self, batches: Iterable) -> Iterator[tuple[float, np.ndarray, np.ndarray]]:
        """Per batch of ``batches``, with the model in eval mode: ``(loss sum, logits, labels)``, the loss
        being ``train.loss`` on the hard labels (:mod:`raykit.losses`), logits float NumPy (N, C) and labels
        integer NumPy (N,). The engine feeds them to :class:`raykit.metrics.EvalStats` for ``train.metrics``."""

    @classmethod
    def evaluation_loss(cls, spec, num_classes: int) -> Callable[[np.ndarray, np.ndarray], float]:
        """``loss_sum(logits, labels)``: ``train.loss`` summed over a batch of NumPy logits and integer labels
        (hard labels), for a finished checkpoint's evaluation: the built-in losses in NumPy float64
        (:func:`raykit.losses.numpy_loss`), a user loss through :meth:`user_loss_sum`."""
        from raykit.losses import LOSSES, numpy_loss

        return numpy_loss(spec.train, num_classes) if spec.train.loss in LOSSES else cls.user_loss_sum(spec, num_classes)

    @classmethod
    def user_loss_sum(cls, spec, num_classes: int) -> Callable[[np.ndarray, np.ndarray], float]:
        """:meth:`evaluation_loss` of a user loss, which expects the framework's tensors. Default: it is given
        NumPy arrays."""
        from raykit.losses import numpy_loss

        return numpy_loss(spec.train, num_classes)

    @abstractmethod
    def learning_rate(self, global_step: int) -> float:
        """The learning rate of the first parameter group at ``global_step``."""

    # --- collectives ------------------------------------------------------------------------------
    @abstractmethod
    def all_reduce_sum(self, values: np.ndarray) -> np.ndarray:
        """``values`` (float64) summed over every rank (itself when alone)."""

    @abstractmethod
    def gather(self, value: dict) -> list[dict]:
        """One JSON-ready ``value`` from every rank, in rank order."""

    # --- checkpoints ------------------------------------------------------------------------------
    def capture_rng(self) -> dict | None:
        """This process's RNG states to resume exactly, or None when the backend needs none."""
        return None

    def apply_rng(self, state: dict) -> None:
        """Restore what :meth:`capture_rng` returned."""

    @abstractmethod
    def save_checkpoint(self, directory: str, *, state: dict, metrics: dict, spec: dict,
                        rng_states: list) -> None:
        """Write a complete checkpoint (weights, optimizer, schedule, RNG, manifest last) into the empty
        local ``directory``; called on rank 0 only."""

    # --- inference (no session: evaluation, export and prediction) --------------------------------
    @classmethod
    @abstractmethod
    def inference_model(cls, spec, checkpoint_dir: str, input_shape, num_classes: int, use_gpu: bool = False):
        """The checkpoint's model behind the spec's evaluation preprocessing: NHWC float images in [0, 1]
        -> logits."""

    @classmethod
    @abstractmethod
    def logits(cls, model, images: np.ndarray) -> np.ndarray:
        """``inference_model``'s float32 logits for NHWC float images (NumPy in, NumPy out)."""

    @classmethod
    @abstractmethod
    def export(cls, spec, checkpoint_dir: str, input_shape, num_classes: int, out_stem: str,
               formats: list[str]) -> dict[str, tuple[str, Callable[[np.ndarray], np.ndarray]]]:
        """Write each format to ``out_stem + suffix``; return ``{format: (path, logits_of)}`` where
        ``logits_of`` runs the written program (to check it against the checkpoint)."""

    @classmethod
    def augment_preview_png(cls, images_nhwc: np.ndarray, ops: list[dict], seed: int, rows: int = 4) -> bytes:
        """A PNG grid of the first ``rows`` images and augmented versions of them (``raykit augment-preview``)."""
        raise NotImplementedError(f"the {cls.info.name} backend draws no augmentation preview")


def with_last(items: Iterable) -> Iterator[tuple[Any, bool]]:
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
