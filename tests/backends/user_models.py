"""A user model factory, imported by tests from the string 'tests.backends.user_models:tiny_linear'."""

import math

from torch import nn


def tiny_linear(spec, input_shape, num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_classes))


def tiny_keras(spec, input_shape, num_classes):
    import keras

    inputs = keras.Input(input_shape)
    return keras.Model(inputs, keras.layers.Dense(num_classes)(keras.layers.Flatten()(inputs)))
