"""``train.loss`` in TensorFlow (see :mod:`raykit.losses` for the losses and the user-loss contract).

The default, cross entropy, runs exactly as before (Keras's ``CategoricalCrossentropy`` with its label
smoothing, ``sparse_categorical_crossentropy`` for validation). Focal and user losses are called inside
the traced step with tf tensors: float32 logits and soft targets (N, C), label-smoothed first.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from raykit import losses


def focal(logits: tf.Tensor, targets: tf.Tensor, gamma: float = 2.0, alpha=None) -> tf.Tensor:
    """Per-sample multi-class focal loss of float logits and soft targets (N, C) (:func:`raykit.losses.focal`)."""
    log_p = tf.nn.log_softmax(logits, axis=1)
    weight = tf.pow(tf.maximum(1.0 - tf.exp(log_p), 0.0), gamma)
    if alpha is not None:
        weight = weight * tf.constant(alpha, dtype=logits.dtype)
    return -tf.reduce_sum(targets * weight * log_p, axis=1)


class Loss:
    """The spec's loss: :meth:`per_sample` trains (soft targets), :meth:`on_labels` validates."""

    def __init__(self, train, num_classes: int):
        self.name, self.num_classes, self.smoothing = train.loss, num_classes, train.label_smoothing
        self.kwargs = losses.loss_kwargs(train)
        # None: the default cross entropy, Keras's own
        self.function = focal if train.loss == losses.FOCAL else losses.user_loss(train)
        self.keras_loss = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=self.smoothing,
                                                               reduction=None)

    def per_sample(self, logits: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
        """Per-sample losses (N,) of float32 ``logits`` for soft targets (N, C), smoothed."""
        if self.function is None:
            return self.keras_loss(targets, logits)
        return self._call(logits, losses.smooth(targets, self.smoothing))

    def on_labels(self, logits: tf.Tensor, labels) -> tf.Tensor:
        """Per-sample losses (N,) of float32 ``logits`` on integer ``labels`` (no smoothing)."""
        if self.function is None:
            return keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
        return self._call(logits, tf.one_hot(labels, self.num_classes, dtype=tf.float32))

    def _call(self, logits: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
        values = tf.convert_to_tensor(self.function(logits, targets, **self.kwargs))
        if losses.is_mean(values.shape, logits.shape[0], self.name):
            return tf.fill(tf.shape(logits)[:1], tf.cast(values, tf.float32))
        return tf.cast(values, tf.float32)


def user_loss_sum(spec, num_classes: int):
    """A user loss's sum over a batch of NumPy logits and labels, given to it as tf tensors (float32 logits)."""
    loss = Loss(spec.train, num_classes)
    return lambda logits, labels: float(tf.reduce_sum(loss.on_labels(tf.constant(logits, tf.float32),
                                                                     np.asarray(labels, np.int64))))
