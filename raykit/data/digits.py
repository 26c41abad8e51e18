"""scikit-learn's embedded digits: 1,797 grayscale 8x8 images of 10 classes, no download needed."""

from __future__ import annotations

import numpy as np


def load() -> tuple[np.ndarray, np.ndarray]:
    """Images (1797, 8, 8, 1) float32 scaled to [0, 1] and labels (1797,) int64."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images.astype(np.float32) / 16.0)[..., None]
    return x, bunch.target.astype(np.int64)
