"""Evaluation metrics beyond loss and accuracy (``train.metrics``): their names, the columns they log, and
the sufficient statistics that make them exact over every rank.

Each rank adds its evaluation batches to an :class:`EvalStats` -- loss sum, correct, samples, top-k hits
and, for ``macro_f1`` / ``per_class_acc``, a C x C confusion matrix -- as one float64 vector
(:meth:`EvalStats.as_array`). The engine sums the vectors with the backend's ``all_reduce_sum`` and
computes the metrics once from the sum (:meth:`EvalStats.from_array`, :meth:`EvalStats.values`), so they
equal the metrics of the whole split on one process. NumPy only::

    stats = EvalStats(num_classes=10, metrics=["top5_acc", "macro_f1"])
    stats.add(loss_sum, logits, labels)            # per batch: logits (N, C), integer labels (N,)
    total = stats.from_array(all_reduce_sum(stats.as_array()))
    total.values("val")   # {"val_loss": ..., "val_acc": ..., "val_top5_acc": ..., "val_macro_f1": ...}

Columns: ``<split>_top<k>_acc``, ``<split>_macro_f1``, and per-class accuracy (recall) as one column per
class, ``<split>_acc/<class>``: the class name made safe for every sink (letters, digits, ``_ . -``;
anything else becomes ``_``), or the class index when the data has no names.
"""

from __future__ import annotations

import re
from typing import Iterable, Sequence

import numpy as np

TOP_K_RANGE = (2, 100)
MACRO_F1, PER_CLASS_ACC = "macro_f1", "per_class_acc"
METRIC_FORMS = (f"top{{k}}_acc with k {TOP_K_RANGE[0]}..{TOP_K_RANGE[1]} (e.g. top5_acc), {MACRO_F1}, "
                f"{PER_CLASS_ACC}")
_TOP_K = re.compile(r"^top([0-9]+)_acc$")
# train.metrics items, for the JSON Schema: top2_acc .. top100_acc, macro_f1, per_class_acc.
METRIC_PATTERN = r"^(top([2-9]|[1-9][0-9]|100)_acc|macro_f1|per_class_acc)$"
# A metric that can rank checkpoints and trials (checkpoint.monitor, tune.metric): one value per epoch.
MONITOR_PATTERN = r"^val_(top[0-9]+_acc|macro_f1)$"
# Every column train.metrics adds to an epoch's row (val_) or a test evaluation (test_).
_COLUMN = re.compile(r"^(val|test)_(top[0-9]+_acc|macro_f1|acc/.+)$")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def top_k(metric: str) -> int | None:
    """``k`` of ``top<k>_acc`` (any k), else None."""
    match = _TOP_K.match(metric) if isinstance(metric, str) else None
    return int(match.group(1)) if match else None


def metric_problem(name: str) -> str:
    """Why ``name`` is not a known metric name (``train.metrics``' item check), or ''."""
    from raykit.spec.fields import did_you_mean

    k = top_k(name)
    if k is not None and not TOP_K_RANGE[0] <= k <= TOP_K_RANGE[1]:
        return f"got {name!r}, k={k}; accepted: k {TOP_K_RANGE[0]}..{TOP_K_RANGE[1]} (top1 is val_acc, always logged)"
    if k is None and name not in (MACRO_F1, PER_CLASS_ACC):
        examples = [f"top{k}_acc" for k in (2, 3, 5, 10)] + [MACRO_F1, PER_CLASS_ACC]
        return f"got {name!r}{did_you_mean(name, examples)}; accepted: {METRIC_FORMS}"
    return ""


def scalar_columns(metrics: Iterable[str], split: str = "val") -> tuple[str, ...]:
    """The one-value columns of ``metrics`` (everything but per-class accuracy): what ``checkpoint.monitor``,
    ``tune.metric`` and ``checkpoint.export_template`` may name, e.g. ``("val_top5_acc", "val_macro_f1")``."""
    return tuple(f"{split}_{name}" for name in metrics if name != PER_CLASS_ACC)


def class_columns(split: str, num_classes: int, class_names: Sequence | None = None) -> list[str]:
    """Per-class accuracy columns ``<split>_acc/<class>``, named after ``class_names`` where they are known
    (made safe, and unique by appending the class index), else after the class index."""
    names = list(class_names or [])
    columns, taken = [], set()
    for index in range(num_classes):
        name = _UNSAFE.sub("_", str(names[index])) if index < len(names) and str(names[index]) else str(index)
        column = f"{split}_acc/{name}"
        if column in taken:
            column = f"{column}_{index}"
        taken.add(column)
        columns.append(column)
    return columns


def is_metric_column(key: str) -> bool:
    """Whether ``key`` is a column that ``train.metrics`` adds (``val_top5_acc``, ``test_acc/cat``, ...)."""
    return bool(_COLUMN.match(key))


def is_scalar_column(key: str) -> bool:
    """Whether ``key`` is a one-value column of ``train.metrics`` (``val_top5_acc``, ``test_macro_f1``; not
    the per-class ``val_acc/<class>``): what the epoch line and the summaries show."""
    return is_metric_column(key) and "/" not in key


class EvalStats:
    """Sufficient statistics of an evaluation, one float64 vector: ``[loss sum, correct, samples, hits of
    each top-k, the confusion matrix (rows: true class, columns: predicted) when macro F1 or per-class
    accuracy is asked for]``.

    Args:
        num_classes: the model's classes (C).
        metrics: ``train.metrics`` names.
        class_names: names of the classes, for the per-class columns (None: by index).
    """

    def __init__(self, num_classes: int, metrics: Sequence[str] = (), class_names: Sequence | None = None):
        self.num_classes, self.metrics, self.class_names = num_classes, list(metrics), class_names
        self.ks = sorted({k for k in map(top_k, self.metrics) if k is not None})
        self.confusion = MACRO_F1 in self.metrics or PER_CLASS_ACC in self.metrics
        self.vector = np.zeros(3 + len(self.ks) + (num_classes ** 2 if self.confusion else 0))

    @property
    def needs_logits(self) -> bool:
        """Whether anything beyond (loss sum, correct, samples) is asked for, so batches' logits must reach
        the host; otherwise a backend's own evaluation totals are enough."""
        return bool(self.ks or self.confusion)

    def add(self, loss_sum: float, logits: np.ndarray, labels: np.ndarray) -> None:
        """One batch: its loss summed over samples, its logits (N, C) and integer labels (N,)."""
        logits, labels = np.asarray(logits), np.asarray(labels, np.int64)
        predicted = logits.argmax(1)
        self.vector[:3] += [loss_sum, np.sum(predicted == labels), len(labels)]
        if self.ks:
            # A sample is a top-k hit when fewer than k classes score strictly higher than its true class.
            higher = (logits > logits[np.arange(len(labels)), labels][:, None]).sum(1)
            self.vector[3:3 + len(self.ks)] += [np.sum(higher < k) for k in self.ks]
        if self.confusion:
            c = self.num_classes
            self.vector[3 + len(self.ks):] += np.bincount(labels * c + predicted, minlength=c * c)

    def as_array(self) -> np.ndarray:
        """The statistics as one float64 vector (what the ranks sum)."""
        return self.vector.copy()

    def from_array(self, values: np.ndarray) -> "EvalStats":
        """Statistics of the same metrics holding ``values`` (e.g. the sum over ranks of :meth:`as_array`)."""
        values = np.asarray(values, np.float64)
        if values.shape != self.vector.shape:
            raise ValueError(f"evaluation statistics of shape {values.shape}; expected {self.vector.shape}")
        other = EvalStats(self.num_classes, self.metrics, self.class_names)
        other.vector = values.copy()
        return other

    def values(self, split: str) -> dict[str, float]:
        """``{<split>_loss, <split>_acc, <split>_top<k>_acc, <split>_macro_f1, <split>_acc/<class>...}``.

        Macro F1 is the mean F1 over the classes present in the labels or the predictions (as
        scikit-learn's ``f1_score(average="macro")``); a class with no samples has a per-class accuracy
        of NaN.
        """
        loss_sum, correct, samples = self.vector[:3]
        out = {f"{split}_loss": loss_sum / samples, f"{split}_acc": correct / samples}
        hits = dict(zip(self.ks, self.vector[3:3 + len(self.ks)]))
        matrix = self.vector[3 + len(self.ks):].reshape(self.num_classes, -1) if self.confusion else None
        for name in self.metrics:
            if top_k(name) is not None:
                out[f"{split}_{name}"] = hits[top_k(name)] / samples
            elif name == MACRO_F1:
                out[f"{split}_{name}"] = macro_f1(matrix)
            else:
                recall = _per_class_recall(matrix)
                out.update(zip(class_columns(split, self.num_classes, self.class_names), recall))
        return {key: float(value) for key, value in out.items()}


def macro_f1(matrix: np.ndarray) -> float:
    """Mean F1 over the classes that occur in a confusion matrix's rows (labels) or columns (predictions)."""
    true_positive = np.diag(matrix)
    actual, predicted = matrix.sum(1), matrix.sum(0)
    present = (actual + predicted) > 0
    f1 = 2 * true_positive[present] / (actual[present] + predicted[present])
    return float(f1.mean()) if present.any() else float("nan")


def _per_class_recall(matrix: np.ndarray) -> np.ndarray:
    actual = matrix.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(actual > 0, np.diag(matrix) / actual, np.nan)
