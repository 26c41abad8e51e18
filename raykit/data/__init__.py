"""Datasets by URI, as framework-neutral NumPy arrays.

Images are float32 arrays in NHWC layout (samples, height, width, channels) with values in [0, 1];
labels are int64 class indices. Backends convert to their own layout. Nothing here imports torch,
TensorFlow or Ray.
"""

from raykit.data.errors import DataError
from raykit.data.splits import (DataInfo, DataPlan, Split, Splits, iter_split, load_splits, plan_data, splits_of,
                                stratified_split, to_float)

__all__ = ["DataError", "DataInfo", "DataPlan", "Split", "Splits", "iter_split", "load_splits", "plan_data",
           "splits_of", "stratified_split", "to_float", "worker_data"]


def worker_data(data_spec, streams, data_info, held: Splits | None = None) -> tuple[DataInfo, Splits | None]:
    """What a training loop trains on: streamed data's info (and no splits), the splits the driver ``held``
    in memory for it (data given from Python), or ``data_spec``'s splits read into memory."""
    if streams:
        return data_info, None
    splits = held or load_splits(data_spec, as_stored=True)  # backends scale uint8 pixels on their device
    return splits.info, splits
