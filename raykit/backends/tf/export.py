"""Deployable copies of a Keras checkpoint's model: a ``.keras`` file and a TensorFlow SavedModel (batch
prediction is :class:`raykit.engine.Predictor` over :meth:`TFBackend.logits`).

An exported model takes what raykit's data gives: float32 images in [0, 1], NHWC, and returns logits.
The spec's evaluation-time ``normalize`` ops are built in as Keras ``Normalization`` layers (standard
layers, so the ``.keras`` file loads in Keras's safe mode), so its predictions equal the checkpoint's.
"""

from __future__ import annotations

import keras
import numpy as np

from raykit.augment import DETERMINISTIC_OPS, resolve_ops
from raykit.backends.tf import checkpoint as ckpt
from raykit.backends.tf.models import build_model
from raykit.spec import RunSpec

FORMATS = {"keras": ".keras", "saved_model": ".savedmodel"}
DEFAULT_FORMATS = ("keras", "saved_model")


def load_inference_model(spec: RunSpec, checkpoint_dir: str, input_shape, num_classes: int) -> keras.Model:
    """The checkpoint's model behind the spec's evaluation preprocessing: NHWC images in [0, 1] -> logits."""
    base = build_model(spec.model, tuple(input_shape), num_classes)
    ckpt.load_weights(checkpoint_dir, base)
    inputs = keras.Input(tuple(input_shape), name="images")
    x = inputs
    for op in resolve_ops(spec.augment.preset, spec.augment.ops):
        if op["op"] in DETERMINISTIC_OPS:
            std = np.asarray(op["std"], np.float32)
            x = keras.layers.Normalization(mean=np.asarray(op["mean"], np.float32), variance=std * std)(x)
    return keras.Model(inputs, base(x, training=False), name=f"{base.name}_inference")


def export(spec: RunSpec, checkpoint_dir: str, input_shape, num_classes: int, out_stem: str,
           formats: list[str]) -> dict[str, tuple[str, object]]:
    """Write each of ``formats`` to ``out_stem + suffix`` (local); return ``{format: (path, logits_of)}``
    where ``logits_of(images)`` runs the reloaded export (to check it against the checkpoint)."""
    model = load_inference_model(spec, checkpoint_dir, input_shape, num_classes)
    written = {}
    for fmt in formats:
        path = out_stem + FORMATS[fmt]
        if fmt == "keras":
            model.save(path)
        else:
            model.export(path, format="tf_saved_model", verbose=False)
        written[fmt] = (path, load_exported(path))
    return written


def load_exported(path: str):
    """A callable NumPy images -> NumPy logits for an exported file or directory."""
    if path.endswith(FORMATS["keras"]):
        model = keras.models.load_model(path, safe_mode=True)
        return lambda images: np.asarray(model(np.asarray(images, np.float32), training=False))
    import tensorflow as tf

    loaded = tf.saved_model.load(path)
    return lambda images: loaded.serve(tf.constant(np.asarray(images, np.float32))).numpy()

