"""Classification metrics from labels and predictions (NumPy only), and the confusion-matrix plot."""

from __future__ import annotations

import numpy as np


def classification_report(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> dict:
    """Accuracy, the confusion matrix (rows: true class, columns: predicted), and per-class precision,
    recall, F1 and support."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    true_positive = np.diag(matrix).astype(float)
    predicted, actual = matrix.sum(0), matrix.sum(1)
    precision = np.divide(true_positive, predicted, out=np.zeros(num_classes), where=predicted > 0)
    recall = np.divide(true_positive, actual, out=np.zeros(num_classes), where=actual > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(num_classes),
                   where=(precision + recall) > 0)
    per_class = [{"class": c, "precision": float(precision[c]), "recall": float(recall[c]), "f1": float(f1[c]),
                  "support": int(actual[c])} for c in range(num_classes)]
    return {"accuracy": float(true_positive.sum() / max(matrix.sum(), 1)), "samples": int(matrix.sum()),
            "confusion_matrix": matrix.tolist(), "per_class": per_class}
