"""After training: export a checkpoint's model for serving, and batch prediction over a dataset.

``raykit.export(checkpoint)`` writes TorchScript and ONNX (torch) or ``.keras`` and SavedModel (Keras)
files that take float32 NHWC images in [0, 1] and return logits, and checks each reproduces the
checkpoint's logits. ``raykit.predict(checkpoint, data, out)`` runs the model over a Parquet / image
folder / .npz dataset with Ray Data actors and writes predictions and class probabilities as Parquet.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from raykit import storage
from raykit.backends import backend_info, load_backend
from raykit.checks import checkpoint_manifest
from raykit.engine import reference_logits
from raykit.spec import RunSpec, SpecError, load_trained_spec

# An exported program whose logits differ from the checkpoint's by more than this (times the logits' scale,
# at least 1) is refused: float32 round-off in another runtime stays orders of magnitude below it.
EXPORT_TOLERANCE = 1e-3



def model_shape(manifest: dict, spec: RunSpec) -> tuple[tuple, int]:
    """(input shape, classes) from the checkpoint; older checkpoints without them ask the data."""
    state = manifest.get("state", {})
    if state.get("input_shape") and state.get("num_classes"):
        return tuple(state["input_shape"]), int(state["num_classes"])
    from raykit.data import plan_data

    info = plan_data(spec.data).info
    return info.input_shape, spec.model.num_classes or info.num_classes


def class_names(manifest: dict, num_classes: int) -> list[str]:
    """The names of the model's outputs: the data's class names, else the class numbers."""
    return manifest.get("state", {}).get("class_names") or [str(i) for i in range(num_classes)]


@dataclass(frozen=True)
class Preprocess:
    """Images as you have them -> what a checkpoint's inference model takes: float32 NHWC in [0, 1] of the
    model's input shape (the model normalizes them itself, as in training's evaluation).

    Called with a local path or URI of data (Parquet, an image folder, ``.npz``, or ``digits``), it reads
    every image as ``raykit predict`` does: decoded, in the run's colour mode, resized to the input shape.
    Called with an array of shape (N, H, W, C), or (N, H, W) for one channel, of uint8 pixels or floats in
    [0, 1], it scales uint8 and checks the shape.
    """

    spec: RunSpec
    input_shape: tuple

    def __call__(self, images) -> np.ndarray:
        from raykit.data import to_float

        if isinstance(images, (str, os.PathLike)):
            source = self.open(os.fspath(images))
            images, _ = source.read_rows(np.arange(len(source)))
        given = np.asarray(images)
        shape = tuple(self.input_shape)
        array = given[..., None] if given.ndim == len(shape) and shape[-1] == 1 else given
        if array.shape[1:] != shape:
            raise ValueError(f"preprocess: images of shape {given.shape}; accepted: (N, {', '.join(map(str, shape))})"
                             f"{' or (N, ' + ', '.join(map(str, shape[:-1])) + ')' if shape[-1] == 1 else ''}, "
                             "or a path or URI of data, which is decoded and resized to that shape")
        return to_float(array)

    def open(self, data: str):
        """``data`` listed as a :class:`raykit.data.sources.Source` that decodes images to the input shape and
        colour mode (rows without a label read as -1)."""
        from raykit.data.sources import ReadOptions, open_source

        shape = tuple(self.input_shape)
        options = ReadOptions(label_column=self.spec.data.label_column, image_column=self.spec.data.image_column,
                              color_mode="grayscale" if shape[-1] == 1 else "rgb", resize=shape[:2])
        data = data if data == "digits" else storage.resolve_storage(data)
        return open_source(data, self.spec.data.format, options, labels_required=False)


def load_model(checkpoint: str, *, use_gpu: bool = False):
    """The model of ``checkpoint`` (path or URI) ready to predict: a torch ``nn.Module`` in eval mode or a
    ``keras.Model``, taking float32 NHWC images in [0, 1] and returning logits, the spec's evaluation
    preprocessing inside. It carries ``preprocess`` (a :class:`Preprocess`: data or arrays -> its input)
    and ``class_names``. :meth:`raykit.Run.load_model` picks the checkpoint of a run.

    Example::

        model = load_model("runs/exp1/checkpoint_epoch=0015")
        logits = model(torch.from_numpy(model.preprocess("digits")))
    """
    manifest = checkpoint_manifest(checkpoint)
    spec = load_trained_spec(manifest["spec"])
    input_shape, num_classes = model_shape(manifest, spec)
    with tempfile.TemporaryDirectory(prefix="raykit-model-") as work:  # the weights are read into memory
        model = load_backend(spec.framework).inference_model(spec, _local_checkpoint(checkpoint, work), input_shape,
                                                             num_classes, use_gpu)
    model.preprocess = Preprocess(spec, tuple(input_shape))
    model.class_names = class_names(manifest, num_classes)
    return model


def export(checkpoint: str, formats: list[str] | None = None, out_dir: str | None = None, overrides=(), *,
           verbose: bool = True) -> dict[str, str]:
    """Export the model of ``checkpoint`` (path or URI) in ``formats`` (default: all of its framework's).

    Files are named by ``checkpoint.export_template`` (e.g. ``15-1.00.onnx``) in ``out_dir`` (default: the
    run's ``export/``), beside ``<name>.export.json`` recording each file's largest logit difference from
    the checkpoint on a random batch. Returns ``{format: location}``.

    Raises:
        RuntimeError: an exported program's logits differ from the checkpoint's by more than
            :data:`EXPORT_TOLERANCE` (times their scale); nothing is written then.

    Example::

        raykit.export("runs/my-run/checkpoint_epoch=0015", ["onnx"])
    """
    manifest = checkpoint_manifest(checkpoint)
    framework = manifest["framework"]
    accepted = backend_info(framework).export_formats
    formats = list(formats or accepted)
    unknown = [f for f in formats if f not in accepted]
    if unknown:
        raise SpecError([("--format", f"got {unknown[0]!r} for a {framework} checkpoint; accepted: "
                                      f"{', '.join(accepted)}")])
    spec = load_trained_spec(manifest["spec"], overrides)
    input_shape, num_classes = model_shape(manifest, spec)
    stem = spec.export_stem(manifest.get("metrics") or {})
    out_dir = out_dir or storage.join(_parent(checkpoint), "export")
    backend = load_backend(framework)
    with tempfile.TemporaryDirectory(prefix="raykit-export-") as work:
        local = _local_checkpoint(checkpoint, work)
        os.makedirs(os.path.join(work, "out"))
        written = backend.export(spec, local, input_shape, num_classes, os.path.join(work, "out", stem), formats)
        probe = np.random.default_rng(0).random((4, *input_shape), dtype=np.float32)
        expected = reference_logits(spec, local, probe, input_shape, num_classes)
        checks = {fmt: float(np.abs(logits_of(probe) - expected).max()) for fmt, (_, logits_of) in written.items()}
        _verify_exports(checks, float(np.abs(expected).max()), out_dir)
        locations = {fmt: _upload(path, storage.join(out_dir, os.path.basename(path)))
                     for fmt, (path, _) in written.items()}
    record = {"checkpoint": checkpoint, "framework": framework, "input": f"float32 NHWC {list(input_shape)} in [0, 1]",
              "output": f"logits ({num_classes} classes)", "class_names": manifest.get("state", {}).get("class_names"),
              "files": locations, "max_abs_logit_difference": checks}
    storage.write_text(storage.join(out_dir, f"{stem}.export.json"), json.dumps(record, indent=1))
    if verbose:
        for fmt, location in locations.items():
            print(f"{fmt:<12} {location}  (max |logit difference| {checks[fmt]:.2e})")
    return locations


def _verify_exports(checks: dict[str, float], scale: float, out_dir: str) -> None:
    """Refuse, before anything is written, exports that do not compute the checkpoint's logits."""
    limit = EXPORT_TOLERANCE * max(1.0, scale)
    wrong = {fmt: difference for fmt, difference in checks.items() if not difference <= limit}  # NaN too
    if wrong:
        listed = ", ".join(f"{fmt} by {difference:.3g}" for fmt, difference in wrong.items())
        raise RuntimeError(f"export: the exported program's logits differ from the checkpoint's ({listed}; accepted: "
                           f"at most {limit:.3g}) on a random batch; nothing was "
                           f"written to {out_dir}")


def _parent(location: str) -> str:
    return location.rstrip("/").rsplit("/", 1)[0]


def _local_checkpoint(checkpoint: str, work: str) -> str:
    if not storage.is_uri(checkpoint) or checkpoint.startswith("file://"):
        return checkpoint.removeprefix("file://")
    return storage.download_dir(checkpoint, os.path.join(work, "checkpoint"))


def _upload(path: str, target: str) -> str:
    """Copy a local file or directory (a SavedModel) to ``target`` (path or URI), file by file, atomically."""
    if os.path.isdir(path):
        for file in sorted(Path(path).rglob("*")):
            if file.is_file():
                storage.write_bytes(storage.join(target, file.relative_to(path).as_posix()), file.read_bytes())
    else:
        storage.write_bytes(target, Path(path).read_bytes())
    return target


def predict(checkpoint: str, data: str, out: str, overrides=(), *, batch_size: int = 256, actors: int = 1,
            use_gpu: bool | None = None, address: str | None = None, verbose: bool = True) -> dict:
    """Predict every image of ``data`` (a Parquet / image-folder / .npz URI, decoded as the checkpoint's
    training data was) with the model of ``checkpoint``, on Ray Data actors, and write Parquet files to
    ``out``: ``row`` (the source's row number), ``label`` (-1 when the data has none), ``prediction``,
    and one ``p_<class>`` probability column per class. ``overrides`` change the checkpoint's spec (e.g.
    ``data.image_column=img``). Returns ``{"rows": N, "out": out, ...}``.

    Example::

        raykit.predict("s3://bucket/runs/r1/checkpoint_epoch=0015", "s3://bucket/new-images/", "s3://bucket/preds/")
    """
    if batch_size < 1 or actors < 1:
        raise SpecError([("--batch-size/--actors", f"got {batch_size}/{actors}; accepted: integers >= 1")])
    manifest = checkpoint_manifest(checkpoint)
    spec = load_trained_spec(manifest["spec"], overrides)
    input_shape, num_classes = model_shape(manifest, spec)
    source = Preprocess(spec, input_shape).open(data)
    names = class_names(manifest, num_classes)

    from raykit.ray import cluster
    from raykit.ray.predict import run_prediction

    cluster.connect(address)
    rows = run_prediction(source, spec, storage.resolve_storage(checkpoint),
                          storage.resolve_storage(out), input_shape, num_classes, names, batch_size=batch_size,
                          actors=actors, use_gpu=spec.scaling.use_gpu if use_gpu is None else use_gpu)
    summary = {"rows": rows, "out": out, "classes": names}
    if verbose:
        print(f"predicted {rows} images from {data} -> {out} (columns row, label, prediction, "
              f"{', '.join('p_' + n for n in names[:3])}{', ...' if len(names) > 3 else ''})")
    return summary
