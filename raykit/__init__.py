"""raykit: scalable deep-learning training on Ray from one run spec.

``import raykit`` is light: it imports neither torch, TensorFlow nor Ray. They load when a run starts.

Example::

    import raykit
    result = raykit.train("jobs/configs/digits_cnn_torch.yaml", ["train.epochs=5"])
    print(result.test_accuracy)
"""

from raykit.spec import RunSpec, SpecError, load_spec

__version__ = "0.1.0"
__all__ = ["RunSpec", "SpecError", "TrainResult", "load_spec", "train", "tune"]


def train(spec=None, overrides=(), **kwargs):
    """Train as the spec says; see :func:`raykit.api.train`."""
    from raykit.api import train as _train

    return _train(spec, overrides, **kwargs)


def tune(spec=None, search_space=None, overrides=(), **kwargs):
    """Sweep hyperparameters with Ray Tune; see :func:`raykit.api.tune`."""
    from raykit.api import tune as _tune

    return _tune(spec, search_space, overrides, **kwargs)


def __getattr__(name):
    if name == "TrainResult":
        from raykit.api import TrainResult

        return TrainResult
    raise AttributeError(f"module 'raykit' has no attribute {name!r}")
