"""TensorFlow / Keras 3 backend: models, augment, finetune, checkpoint, export, and ``backend.TFBackend``.

Why Keras 3 with a custom distributed step rather than ``model.fit`` or legacy Keras 2: Keras 3's
``model.fit`` under ``MultiWorkerMirroredStrategy`` fails with 2+ workers ("Attempt to convert a value
(PerReplica...)", keras-team/keras#20585, ray-project/ray#47464), while Keras 3 models and optimizers
built in the strategy's scope and trained by ``strategy.run`` with a ``GradientTape`` step synchronise
correctly. Legacy Keras 2 (``tf-keras`` with ``TF_USE_LEGACY_KERAS=1``) would need that variable in
every worker's environment before TensorFlow is imported, an extra pinned package, and the deprecated
Keras 2 API; the custom step keeps one Keras (3) for models, files and users. The loop also gives us
what ``fit`` would hide: per-step learning rates from raykit's schedules, exact cross-rank metrics, and
full-state checkpoints.

``INFO`` holds the facts shared code needs without importing TensorFlow.
"""

from __future__ import annotations

import os

from raykit.backends.base import GPU, BackendInfo
from raykit.backends.tf import zoo
from raykit.backends.tf.zoo import weights_cache

# Before TensorFlow is imported anywhere in this process: Keras on TensorFlow, and quieter C++ logs.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def refusals(spec) -> list[tuple[str, str]]:
    """Option combinations the TF backend cannot run."""
    problems = []
    if spec.train.precision == "fp16" and spec.finetune.backbone_lr_mult != 1.0:
        problems.append(("finetune.backbone_lr_mult", "got a multiplier with train.precision=fp16 on tf; the loss "
                                                      "scaler needs one optimizer: accepted: 1.0, or bf16"))
    if spec.model.name.startswith(zoo.PREFIX):
        problems += zoo.kwargs_problems(spec.model.kwargs)
    return problems


def _input_check(spec, input_shape, num_classes: int) -> list[tuple[str, str]]:
    """A keras: model the data's images are too small for, on the driver once the data is planned."""
    return zoo.input_problems(spec.model.name, input_shape) if spec.model.name.startswith(zoo.PREFIX) else []


INFO = BackendInfo(
    name="tf",
    implementation="raykit.backends.tf.backend:TFBackend",
    trainer="tensorflow",
    description="TensorFlow + Keras 3, MultiWorkerMirroredStrategy under Ray Train's TensorflowTrainer",
    model_names=("mlp", "cnn", "resnet50"),
    optimizer_names=("adam", "adamw", "sgd", "rmsprop"),
    # keras.applications' no-top files, as keras.utils.get_file names them in its cache.
    imagenet_files={"resnet50": (zoo.KERAS_APPLICATIONS["ResNet50"],)},
    weights_cache=weights_cache,
    imagenet_fetch=lambda name: zoo.fetch_command("ResNet50"),  # the one built-in model with ImageNet weights
    model_zoos=(zoo.MODEL_ZOO,),  # keras:<name>
    export_formats=("keras", "saved_model"),
    capabilities=frozenset({GPU}),
    refusals=refusals,
    weights_check=_input_check,
    required_modules=("tensorflow", "keras"),
    install_name="TensorFlow",
    install_extra="tf",
)
