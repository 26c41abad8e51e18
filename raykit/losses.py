"""The training loss (``train.loss``, ``train.loss_kwargs``), framework-neutral: names, validation,
the NumPy forms, and what every backend does the same way.

* ``cross_entropy`` (default): soft-target cross entropy (mixup/cutmix targets), with
  ``train.label_smoothing``.
* ``focal``: multi-class focal loss on the softmax, ``-sum_c alpha_c * t_c * (1 - p_c)**gamma * log p_c``
  (Lin et al. 2017 with soft targets ``t``); ``gamma`` (default 2.0; 0 is cross entropy) and ``alpha``
  (null; a number scales the loss, a list weighs each class).
* ``"package.module:function"``: your own, called as ``function(logits, targets, **train.loss_kwargs)``
  with float32 ``logits`` (N, C) and soft-label ``targets`` (N, C, rows summing to 1) in the framework's
  own tensors (torch tensors on the device; tf tensors inside the traced step), returning per-sample
  losses (N,). A scalar is taken as the batch's mean (every sample counted with that value).

Label smoothing applies to the targets before any loss: ``t * (1 - s) + s / C``. Validation (``val_loss``)
and test evaluation use the same loss on the hard labels (one-hot targets, no smoothing, no mixing).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import numpy as np

from raykit.user_code import import_factory

CROSS_ENTROPY, FOCAL = "cross_entropy", "focal"
LOSSES = (CROSS_ENTROPY, FOCAL)
FOCAL_DEFAULTS = {"gamma": 2.0, "alpha": None}
USER_LOSS_FORM = ("a function fn(logits, targets, **train.loss_kwargs) of float32 logits (N, C) and soft-label "
                  "targets (N, C) in the framework's tensors, returning per-sample losses (N,) or their mean")


def loss_problems(train, num_classes: int | None = None) -> list[tuple[str, str]]:
    """Why ``train.loss`` with ``train.loss_kwargs`` cannot run, as ``(field path, message)`` pairs: an
    unknown focal keyword or a bad value, or a user loss that cannot be imported or called as
    :data:`USER_LOSS_FORM` (it is imported here, before Ray starts). ``num_classes``, when known, checks
    the length of a per-class ``alpha``."""
    name, kwargs = train.loss, train.loss_kwargs
    if name == CROSS_ENTROPY:
        return [("train.loss_kwargs", f"got {kwargs!r} with train.loss=cross_entropy, which takes none; accepted: "
                                      "{} (label smoothing is train.label_smoothing)")] if kwargs else []
    if name == FOCAL:
        return _focal_problems(kwargs, num_classes)
    try:
        function = import_factory(name)
    except ImportError as exc:
        return [("train.loss", f"got {name!r}: {exc}; accepted: cross_entropy, focal, or {USER_LOSS_FORM}")]
    try:
        inspect.signature(function).bind(None, None, **kwargs)
    except TypeError as exc:
        return [("train.loss", f"got {name!r} with train.loss_kwargs {sorted(kwargs)}, which its signature "
                               f"{inspect.signature(function)} refuses ({exc}); accepted: {USER_LOSS_FORM}")]
    except ValueError:  # a builtin without a signature: its first call tells
        pass
    return []


def _focal_problems(kwargs: dict, num_classes: int | None) -> list[tuple[str, str]]:
    problems = []
    for key, value in kwargs.items():
        path = f"train.loss_kwargs.{key}"
        if key not in FOCAL_DEFAULTS:
            problems.append((path, f"got {key}={value!r}, an unknown keyword of focal; accepted: gamma, alpha"))
        elif key == "gamma" and not (_is_number(value) and value >= 0):
            problems.append((path, f"got {value!r}; accepted: a number >= 0 (0 is cross entropy)"))
        elif key == "alpha" and value is not None:
            weights = value if isinstance(value, list) else [value]
            if not weights or not all(_is_number(w) and w > 0 for w in weights):
                problems.append((path, f"got {value!r}; accepted: null, a number > 0, or a list of one number > 0 "
                                       "per class"))
            elif isinstance(value, list) and num_classes is not None and len(value) != num_classes:
                problems.append((path, f"got {len(value)} class weights for {num_classes} classes; accepted: "
                                       f"{num_classes} weights, a number, or null"))
    return problems


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def loss_kwargs(train) -> dict:
    """The keyword arguments the loss function gets: focal's defaults filled in, a user loss's own."""
    return {**FOCAL_DEFAULTS, **train.loss_kwargs} if train.loss == FOCAL else dict(train.loss_kwargs)


def user_loss(train) -> Callable | None:
    """A user loss's function (imported), or None for the built-in ones."""
    return None if train.loss in LOSSES else import_factory(train.loss, "train.loss")


def smooth(targets, label_smoothing: float):
    """``targets * (1 - s) + s / C``: label smoothing of soft targets (N, C), in any framework's tensors."""
    if not label_smoothing:
        return targets
    return targets * (1.0 - label_smoothing) + label_smoothing / targets.shape[-1]


def is_mean(shape, batch: int | None, name: str) -> bool:
    """Whether a loss function's result of ``shape`` is a batch mean (a scalar) rather than per-sample
    losses ``(batch,)`` (``batch`` None: not known while a graph is traced).

    Raises:
        ValueError: any other shape, naming the loss and what is accepted.
    """
    shape = tuple(shape)
    if shape == ():
        return True
    if len(shape) == 1 and (batch is None or shape[0] in (batch, None)):
        return False
    raise ValueError(f"train.loss: {name!r} returned shape {shape} for a batch of {batch}; accepted: per-sample "
                     "losses (N,) or their mean (a scalar)")


# --------------------------------------------------------------------------------------------------
# NumPy forms: the reference of the backends' losses, and a finished checkpoint's evaluation


def numpy_loss(train, num_classes: int) -> Callable[[np.ndarray, np.ndarray], float]:
    """``train.loss`` as ``loss_sum(logits, labels)``: the sum over a batch of the loss on hard labels, in
    NumPy float64 (a user loss is called with NumPy arrays)."""
    function, kwargs = {CROSS_ENTROPY: cross_entropy, FOCAL: focal}.get(train.loss) or user_loss(train), loss_kwargs(train)

    def loss_sum(logits: np.ndarray, labels: np.ndarray) -> float:
        targets = np.eye(num_classes)[np.asarray(labels, np.int64)]
        values = np.asarray(function(np.asarray(logits, np.float64), targets, **kwargs), np.float64)
        return float(values * len(labels) if is_mean(values.shape, len(labels), train.loss) else values.sum())

    return loss_sum


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def cross_entropy(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per-sample soft-target cross entropy."""
    return -(targets * log_softmax(logits)).sum(axis=1)


def focal(logits: np.ndarray, targets: np.ndarray, gamma: float = 2.0, alpha=None) -> np.ndarray:
    """Per-sample multi-class focal loss (the module docstring's formula)."""
    log_p = log_softmax(logits)
    weight = np.clip(1.0 - np.exp(log_p), 0.0, None) ** gamma
    if alpha is not None:
        weight = weight * np.asarray(alpha, np.float64)
    return -(targets * weight * log_p).sum(axis=1)
