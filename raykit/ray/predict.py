"""Batch prediction with Ray Data: read tasks decode chunks, an actor pool runs the model, Parquet out."""

from __future__ import annotations

import os
import tempfile

import numpy as np
import ray.data

from raykit import storage
from raykit.engine import Predictor
from raykit.data.sources import Chunk, Source
from raykit.ray.data import chunk_dataset
from raykit.spec import RunSpec

ROWS_PER_CHUNK = 1024  # sources held whole in memory (digits, .npz) are cut into chunks of this size


class _PredictActor:
    """Loads the checkpoint's model once per actor, then predicts batch after batch."""

    def __init__(self, spec_dict: dict, checkpoint: str, input_shape, num_classes: int,
                 class_names: list[str], use_gpu: bool):
        self.work = tempfile.mkdtemp(prefix="raykit-predict-")
        local = checkpoint
        if storage.is_uri(checkpoint) and not checkpoint.startswith("file://"):
            local = storage.download_dir(checkpoint, os.path.join(self.work, "checkpoint"))
        self.predict = Predictor(spec_dict, local.removeprefix("file://"), input_shape, num_classes, use_gpu)
        self.class_names = class_names

    def __call__(self, batch: dict) -> dict:
        predictions, probabilities = self.predict(batch["x"])
        out = {"row": batch["row"].astype(np.int64), "label": batch["y"].astype(np.int64),
               "prediction": predictions.astype(np.int64)}
        for index, name in enumerate(self.class_names):
            out[f"p_{name}"] = probabilities[:, index].astype(np.float32)
        return out


def run_prediction(source: Source, spec: RunSpec, checkpoint: str, out: str, input_shape,
                   num_classes: int, class_names: list[str], *, batch_size: int, actors: int, use_gpu: bool) -> int:
    """Predict every row of ``source``; write Parquet files under ``out``; return the number of rows."""
    chunks = source.chunks or [Chunk(rows=np.arange(i, min(i + ROWS_PER_CHUNK, len(source))))
                               for i in range(0, len(source), ROWS_PER_CHUNK)]
    ray.data.DataContext.get_current().enable_progress_bars = False
    decoded = chunk_dataset(source, chunks, np.ones(len(source), dtype=bool), spec.data.read_cpus)
    predicted = decoded.map_batches(
        _PredictActor, fn_constructor_args=(spec.to_dict(), checkpoint, list(input_shape), num_classes,
                                            list(class_names), use_gpu),
        compute=ray.data.ActorPoolStrategy(size=actors), batch_size=batch_size, batch_format="numpy",
        num_cpus=0 if use_gpu else 1, num_gpus=1 if use_gpu else 0)
    filesystem, path = storage.filesystem(out)
    predicted.write_parquet(path, filesystem=filesystem)
    return int(len(source))
