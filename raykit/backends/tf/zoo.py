"""The Keras zoo: ``model.name: keras:<name>`` for the classification models of ``keras.applications``,
known without importing Keras (importing it imports TensorFlow: seconds the driver of a run should not spend).

:data:`KERAS_APPLICATIONS` lists every model constructor of ``keras.applications`` (Keras 3.15) and the file
of ImageNet weights without the top that it loads, as ``keras.utils.get_file`` names it in
``$KERAS_HOME/models``. The table was read from Keras itself (each constructor called with
``weights="imagenet", include_top=False`` and ``get_file`` intercepted); a test compares its names with
``keras.applications``' functions, and the recipe test loads ResNet50's file through Keras's own loading code.
The MobileNets name their file after ``alpha`` (and ``minimalistic``) and the input size: the table holds the
file of the defaults (alpha 1.0, 224x224); a worker always loads the file Keras asks for (see
:func:`raykit.backends.tf.models.keras_application`), and its error names it.
"""

from __future__ import annotations

import os
from pathlib import Path

from raykit.backends.base import ModelZoo

PREFIX = "keras:"

# keras.applications constructor -> its ImageNet weights file without the top (default arguments).
KERAS_APPLICATIONS: dict[str, str] = {
    "ConvNeXtBase": "convnext_base_notop.h5",
    "ConvNeXtLarge": "convnext_large_notop.h5",
    "ConvNeXtSmall": "convnext_small_notop.h5",
    "ConvNeXtTiny": "convnext_tiny_notop.h5",
    "ConvNeXtXLarge": "convnext_xlarge_notop.h5",
    "DenseNet121": "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "DenseNet169": "densenet169_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "DenseNet201": "densenet201_weights_tf_dim_ordering_tf_kernels_notop.h5",
    **{f"EfficientNetB{i}": f"efficientnetb{i}_notop.h5" for i in range(8)},
    **{f"EfficientNetV2{v}": f"efficientnetv2-{v.lower()}_notop.h5" for v in ("B0", "B1", "B2", "B3", "L", "M", "S")},
    "InceptionResNetV2": "inception_resnet_v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "InceptionV3": "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "MobileNet": "mobilenet_1_0_224_tf_no_top.h5",
    "MobileNetV2": "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
    "MobileNetV3Large": "weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5",
    "MobileNetV3Small": "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5",
    "NASNetLarge": "nasnet_large_no_top.h5",
    "NASNetMobile": "nasnet_mobile_no_top.h5",
    **{f"ResNet{depth}": f"resnet{depth}_weights_tf_dim_ordering_tf_kernels_notop.h5" for depth in (50, 101, 152)},
    **{f"ResNet{depth}V2": f"resnet{depth}v2_weights_tf_dim_ordering_tf_kernels_notop.h5" for depth in (50, 101, 152)},
    "VGG16": "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "VGG19": "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "Xception": "xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
}

# The smallest input height and width each constructor builds for (keras.applications' obtain_input_shape
# min_size; a test checks each against Keras); MobileNetV3 checks none.
MIN_INPUT_SIZE: dict[str, int] = {**{name: 32 for name in KERAS_APPLICATIONS if not name.startswith("MobileNetV3")},
                                  "InceptionResNetV2": 75, "InceptionV3": 75, "Xception": 71}

# Constructor arguments raykit sets itself: the base is built without its top, for the run's input shape.
RESERVED_KWARGS = ("include_top", "weights", "input_shape", "input_tensor", "classes", "classifier_activation")


def weights_cache() -> Path:
    """keras.utils.get_file's cache: ``$KERAS_HOME/models`` (default ``~/.keras``)."""
    return Path(os.environ.get("KERAS_HOME", "~/.keras")).expanduser() / "models"


def weights_file(constructor: str) -> tuple[Path, Path | None]:
    """(where the no-top ImageNet file of ``keras.applications.<constructor>`` (default arguments) is looked
    for in ``$KERAS_HOME/models``, that path if the file is there)."""
    path = weights_cache() / KERAS_APPLICATIONS[constructor]
    return path, (path if path.is_file() else None)


def fetch_command(constructor: str) -> str:
    """A shell command that downloads ``keras.applications.<constructor>``'s ImageNet weights once into
    ``$KERAS_HOME/models``."""
    return (f"python -c \"import keras; keras.applications.{constructor}(weights='imagenet', include_top=False)\" "
            "(on a machine with network access; then copy the file into this cache)")


# The zoo's facts for the spec's rules: names from the table above, so TensorFlow is never imported to check one.
MODEL_ZOO = ModelZoo(prefix=PREFIX, names=lambda: tuple(KERAS_APPLICATIONS), listing="keras.applications",
                     weights_file=weights_file, fetch_command=fetch_command)


def kwargs_problems(kwargs: dict) -> list[tuple[str, str]]:
    """``model.kwargs`` keys that raykit sets itself for a keras: model."""
    return [(f"model.kwargs.{key}", f"got {key}={kwargs[key]!r}, which raykit sets itself for a keras: model "
                                    "(include_top=False, weights from model.pretrained, input_shape from the data, "
                                    "raykit's head); accepted: the constructor's other arguments, e.g. pooling, "
                                    "alpha")
            for key in RESERVED_KWARGS if key in kwargs]


def input_problems(model_name: str, input_shape: tuple) -> list[tuple[str, str]]:
    """A keras: model the data's images are too small for (its constructor would refuse them on every
    worker)."""
    smallest = MIN_INPUT_SIZE.get(model_name.removeprefix(PREFIX))
    height, width = input_shape[:2]
    if smallest and min(height, width) < smallest:
        return [("data.resize", f"got images of {height}x{width} for model.name={model_name!r}, which needs at least "
                                f"{smallest}x{smallest}; accepted: data.resize: [{smallest}, {smallest}] or larger, or "
                                "another model")]
    return []
