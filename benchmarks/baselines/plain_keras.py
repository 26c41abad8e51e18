"""Plain Keras 3 ``model.fit``, the baseline for raykit's TF loop: the seed's CNN built layer by layer
(conv 3x3 + ReLU -> batch norm -> max-pool 2x2 per filter count, then flatten -> dense + ReLU -> dropout ->
dense; the same architecture as raykit's ``cnn``), compiled with Adam and fitted with validation after every
epoch, as raykit's loop validates.

    model = build_cnn((8, 8, 1), 10)
    seconds, val_acc = train(model, x_train, y_train, x_val, y_val, epochs=3, batch_size=64, lr=1e-3)
"""

from __future__ import annotations

import time

import keras
import numpy as np


def build_cnn(input_shape: tuple[int, int, int], num_classes: int, filters=(32, 64, 128), hidden=(128,),
              dropout: float = 0.5, momentum: float = 0.9) -> keras.Model:
    inputs = keras.Input(input_shape)
    x = inputs
    for out in filters:
        x = keras.layers.Conv2D(out, 3, padding="same", activation="relu")(x)
        x = keras.layers.BatchNormalization(momentum=momentum, epsilon=1e-5)(x)
        x = keras.layers.MaxPooling2D(2, padding="same")(x)
    x = keras.layers.Flatten()(x)
    for size in hidden:
        x = keras.layers.Dense(size, activation="relu")(x)
    x = keras.layers.Dropout(dropout)(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes)(x))


class _EpochTimer(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):  # after the epoch's validation
        self.seconds.append(time.perf_counter() - self.started)


def train(model: keras.Model, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, *,
          epochs: int, batch_size: int, lr: float) -> tuple[list[float], float]:
    """``compile`` + ``fit`` on NHWC float32 images; returns each epoch's seconds (training + validation,
    validated in batches of 1024 as raykit does) and the last validation accuracy."""
    model.compile(optimizer=keras.optimizers.Adam(lr), metrics=["accuracy"],
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    timer = _EpochTimer()
    history = model.fit(x_train, y_train, batch_size=batch_size, epochs=epochs, validation_data=(x_val, y_val),
                        validation_batch_size=1024, shuffle=True, callbacks=[timer], verbose=0)
    return timer.seconds, float(history.history["val_accuracy"][-1])
