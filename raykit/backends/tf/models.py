"""Keras 3 models built from the spec's ``model`` section; the same spec gives the same architecture as
the PyTorch backend (layer for layer for ``mlp`` and ``cnn``), initialised the way PyTorch initialises it.

Keras's defaults (glorot-uniform kernels, zero biases) are not PyTorch's (kernels and biases uniform in
+-1/sqrt(fan_in)): on CIFAR-10 they draw the seed CNN's dense weights from a 2.4x wider range, and one
spec (train.seed 0) then reached 0.505 test accuracy in TensorFlow against torch's 0.6075; with PyTorch's
initialisation alone, 0.597 (issue 20; benchmarks/parity_cifar.py). So every conv and dense layer raykit
builds here takes :func:`torch_default_init`; batch norm uses PyTorch's epsilon (1e-5) and its momentum
translated (:func:`keras_batchnorm_momentum`).
"""

from __future__ import annotations

import math

import keras

from raykit.backends.tf import zoo
from raykit.registry import Registry
from raykit.spec import ModelSpec

MODELS = Registry("model.name", user_factories=True)


def build_model(spec: ModelSpec, input_shape: tuple[int, int, int], num_classes: int) -> keras.Model:
    """Build ``spec.name`` for images of ``input_shape`` (H, W, C) and ``num_classes`` logits."""
    factory = keras_application if spec.name.startswith(zoo.PREFIX) else MODELS.get(spec.name)
    model = factory(spec, input_shape, num_classes)
    if not isinstance(model, keras.Model):
        raise TypeError(f"model.name: factory {spec.name!r} returned {type(model).__name__}; "
                        "accepted: a keras.Model")
    return model


def keras_batchnorm_momentum(torch_momentum: float) -> float:
    """PyTorch's momentum weights the new batch; Keras's weights the running value."""
    return 1.0 - torch_momentum


def torch_default_init(fan_in: int) -> dict:
    """PyTorch's default initialisation of ``nn.Linear`` / ``nn.Conv2d`` as Keras layer arguments: the
    kernel (``kaiming_uniform_(a=sqrt(5))``) and the bias both uniform in +-1/sqrt(fan_in), fan_in being
    inputs x kernel area. Draws come from Keras's global seed (``keras.utils.set_random_seed``)."""
    bound = 1.0 / math.sqrt(fan_in)
    return {"kernel_initializer": keras.initializers.RandomUniform(-bound, bound),
            "bias_initializer": keras.initializers.RandomUniform(-bound, bound)}


def dense(x, units: int, **kwargs):
    """A dense layer on ``x`` initialised like ``nn.Linear``."""
    return keras.layers.Dense(units, **torch_default_init(int(x.shape[-1])), **kwargs)(x)


def _dense_head(x, spec: ModelSpec, num_classes: int):
    x = keras.layers.Flatten()(x)
    for width in spec.hidden:
        x = dense(x, width, activation="relu")
    x = keras.layers.Dropout(spec.dropout)(x)
    return dense(x, num_classes, name="head")


@MODELS.register("mlp")
def mlp(spec: ModelSpec, input_shape: tuple[int, int, int], num_classes: int) -> keras.Model:
    """Flatten -> [dense + ReLU] * len(hidden) -> dropout -> dense head (logits)."""
    inputs = keras.Input(input_shape)
    return keras.Model(inputs, _dense_head(inputs, spec, num_classes), name="mlp")


@MODELS.register("cnn")
def cnn(spec: ModelSpec, input_shape: tuple[int, int, int], num_classes: int) -> keras.Model:
    """The seed's CNN: per filter count, conv 3x3 (same padding) + ReLU -> batch norm -> max-pool 2x2
    (rounding up, like the torch backend), then flatten -> dense + ReLU -> dropout -> dense head."""
    inputs = keras.Input(input_shape)
    x = inputs
    for filters in spec.filters:
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu",
                                **torch_default_init(3 * 3 * int(x.shape[-1])))(x)
        x = keras.layers.BatchNormalization(momentum=keras_batchnorm_momentum(spec.batchnorm_momentum),
                                            epsilon=1e-5)(x)
        x = keras.layers.MaxPooling2D(2, padding="same")(x)
    return keras.Model(inputs, _dense_head(x, spec, num_classes), name="cnn")


@MODELS.register("resnet50")
def resnet50(spec: ModelSpec, input_shape: tuple[int, int, int], num_classes: int) -> keras.Model:
    """keras.applications.ResNet50 (random weights; ``model.pretrained: imagenet`` loads Keras's cached
    file in finetune) with global average pooling, dropout and a new dense head. Keras's stem needs
    inputs of at least 32x32 and has no small-image variant."""
    height, width, _ = input_shape
    if spec.stem == "small" or min(height, width) < 32:
        raise ValueError(f"model.name: resnet50 on TensorFlow needs images of at least 32x32 and the imagenet "
                         f"stem; got {height}x{width} with model.stem={spec.stem!r} (use framework: torch for "
                         "a small stem, or cnn)")
    backbone = keras.applications.ResNet50(weights=None, include_top=False, input_shape=input_shape, pooling="avg")
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = keras_batchnorm_momentum(spec.batchnorm_momentum)
    inputs = keras.Input(input_shape)
    x = keras.layers.Dropout(spec.dropout)(backbone(inputs))
    return keras.Model(inputs, dense(x, num_classes, name="head"), name="resnet50")


def keras_application(spec: ModelSpec, input_shape: tuple[int, int, int], num_classes: int) -> keras.Model:
    """``keras:<name>``: the keras.applications model without its top (random weights; ``model.pretrained``
    loads ImageNet's in finetune), called with ``model.kwargs``, nested as the first layer of a model that
    adds raykit's head, as the seed's fine-tuning does: flatten -> dense + ReLU for each of ``model.hidden``
    -> dropout -> dense head (logits). ``model.kwargs: {pooling: avg}`` pools instead of flattening the
    feature map (Flatten then keeps the pooled vector)."""
    inputs = keras.Input(input_shape)
    features = application_base(spec, input_shape)(inputs)
    name = spec.name.removeprefix(zoo.PREFIX).lower()
    return keras.Model(inputs, _dense_head(features, spec, num_classes), name=f"{name}_raykit")


def application_base(spec: ModelSpec, input_shape: tuple[int, int, int], weights: str | None = None) -> keras.Model:
    """The keras.applications constructor of ``keras:<name>`` called with ``include_top=False``, ``weights``
    and ``model.kwargs`` (inside :class:`cache_only_downloads` when ``weights`` is ``"imagenet"``)."""
    constructor = getattr(keras.applications, spec.name.removeprefix(zoo.PREFIX))
    return constructor(include_top=False, weights=weights, input_shape=input_shape, **spec.kwargs)


class cache_only_downloads:
    """Within it, ``keras.utils.get_file`` (as keras.applications calls it) returns the file from Keras's
    cache, ``$KERAS_HOME/models``, or raises FileNotFoundError naming the file, the directory and how to
    fetch it once: raykit never downloads."""

    def __init__(self, model_name: str):
        self.model_name = model_name
        self.found: list[str] = []  # the files it handed out

    def __enter__(self):
        from keras.src.utils import file_utils  # what every keras.applications module calls get_file through

        self.module, self.original = file_utils, file_utils.get_file
        file_utils.get_file = self._cached
        return self

    def __exit__(self, *exc) -> None:
        self.module.get_file = self.original

    def _cached(self, fname, origin=None, *args, cache_subdir="models", **kwargs) -> str:
        from raykit.backends.tf import weights_cache

        path = weights_cache().parent / cache_subdir / fname
        if path.is_file():
            self.found.append(str(path))
            return str(path)
        fetch = zoo.fetch_command(self.model_name.removeprefix(zoo.PREFIX))
        raise FileNotFoundError(f"model.pretrained: {self.model_name} needs {fname} in {path.parent} (Keras's cache, "
                                f"$KERAS_HOME/models; KERAS_HOME default ~/.keras) and raykit never downloads; "
                                f"fetch it once with {fetch}, or from {origin}")


def trainable_parameter_count(model: keras.Model) -> int:
    return sum(math.prod(v.shape) for v in model.trainable_weights)
