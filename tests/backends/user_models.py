"""A user model factory, imported by tests from the string 'tests.backends.user_models:tiny_linear'."""

import math

from torch import nn


def tiny_linear(spec, input_shape, num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_classes))


def tiny_keras(spec, input_shape, num_classes):
    import keras

    inputs = keras.Input(input_shape)
    return keras.Model(inputs, keras.layers.Dense(num_classes)(keras.layers.Flatten()(inputs)))


PROBED = ("SPEC_ONLY", "HF_HOME", "TORCH_HOME", "WANDB_MODE", "NOT_FORWARDED")


def env_probe(spec, input_shape, num_classes):
    """tiny_linear, after writing the variables of PROBED that the process building it sees to a new
    JSON file under $RAYKIT_TEST_ENV_PROBE (tests/test_tracking_ray.py: what reaches a Ray worker)."""
    import json
    import os
    import uuid
    from pathlib import Path

    seen = {name: os.environ[name] for name in PROBED if name in os.environ}
    (Path(os.environ["RAYKIT_TEST_ENV_PROBE"]) / f"{uuid.uuid4().hex}.json").write_text(json.dumps(seen))
    return tiny_linear(spec, input_shape, num_classes)


def tiny_mlp(spec, input_shape, num_classes, hidden=4):
    """tiny_linear with one hidden layer of ``hidden`` units (model.kwargs: {hidden: N})."""
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), hidden), nn.ReLU(),
                         nn.Linear(hidden, num_classes))
