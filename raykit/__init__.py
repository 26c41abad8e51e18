"""raykit: scalable deep-learning training on Ray from one run spec.

``import raykit`` is light: it imports neither torch, TensorFlow nor Ray. They load when a run starts.

Example::

    import raykit
    result = raykit.train("jobs/configs/digits_cnn_torch.yaml", ["train.epochs=5"])
    print(result.test_accuracy)
    model = result.load_model()                           # the best checkpoint's model, eval mode
    run = raykit.Run.open(result.run_dir)                  # the same run, reopened later (path or URI)
"""

from raykit.spec import RunSpec, SpecError, load_spec

__version__ = "0.1.0"
__all__ = ["Run", "RunSpec", "SpecError", "TrainResult", "evaluate", "export", "load_spec", "predict", "report",
           "train", "tune"]


def train(spec=None, overrides=(), **kwargs):
    """Train as the spec says; see :func:`raykit.api.train`."""
    from raykit.api import train as _train

    return _train(spec, overrides, **kwargs)


def tune(spec=None, search_space=None, overrides=(), **kwargs):
    """Sweep hyperparameters with Ray Tune; see :func:`raykit.api.tune`."""
    from raykit.api import tune as _tune

    return _tune(spec, search_space, overrides, **kwargs)


def evaluate(checkpoint, split="test", overrides=(), **kwargs):
    """Accuracy, per-class precision/recall and a confusion matrix; see :func:`raykit.api.evaluate`."""
    from raykit.api import evaluate as _evaluate

    return _evaluate(checkpoint, split, overrides, **kwargs)


def export(checkpoint, formats=None, out_dir=None, overrides=(), **kwargs):
    """Export a checkpoint's model (TorchScript/ONNX or .keras/SavedModel); see :func:`raykit.inference.export`."""
    from raykit.inference import export as _export

    return _export(checkpoint, formats, out_dir, overrides, **kwargs)


def predict(checkpoint, data, out, overrides=(), **kwargs):
    """Batch inference with Ray Data into Parquet; see :func:`raykit.inference.predict`."""
    from raykit.inference import predict as _predict

    return _predict(checkpoint, data, out, overrides, **kwargs)


def report(directory, out_dir=None):
    """PNGs and a summary of a run or sweep directory; see :func:`raykit.report.report`."""
    from raykit.report import report as _report

    return _report(directory, out_dir)


def __getattr__(name):
    if name == "Run":  # a finished run: raykit.Run.open(path_or_uri); see raykit.run
        from raykit.run import Run

        return Run
    if name == "TrainResult":
        from raykit.api import TrainResult

        return TrainResult
    raise AttributeError(f"module 'raykit' has no attribute {name!r}")
