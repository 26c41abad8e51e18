"""Datasets by URI, as framework-neutral NumPy arrays.

Images are float32 arrays in NHWC layout (samples, height, width, channels) with values in [0, 1];
labels are int64 class indices. Backends convert to their own layout. Nothing here imports torch,
TensorFlow or Ray.
"""

from raykit.data.splits import Split, Splits, load_splits, stratified_split

__all__ = ["Split", "Splits", "load_splits", "stratified_split"]
