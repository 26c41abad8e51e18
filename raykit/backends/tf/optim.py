"""Keras optimizers by ``optim.name``, in the same kind of registry as models and LR schedules; the same
names with the same meaning as ``raykit/backends/torch/optim.py`` (a test keeps both equal to
``INFO.optimizer_names``)."""

from __future__ import annotations

import keras

from raykit.registry import Registry
from raykit.spec import OptimSpec

OPTIMIZERS = Registry("optim.name")

RMSPROP_RHO, RMSPROP_EPSILON = 0.9, 1e-7  # Keras's defaults; the torch backend uses the same


def build_optimizer(spec: OptimSpec, lr: float, loss_scaling: bool = False):
    """The optimizer ``spec.name`` at learning rate ``lr``; wrapped in a loss scaler for fp16."""
    optimizer = OPTIMIZERS.get(spec.name)(spec, lr)
    return keras.optimizers.LossScaleOptimizer(optimizer) if loss_scaling else optimizer


@OPTIMIZERS.register("sgd")
def sgd(spec: OptimSpec, lr: float):
    return keras.optimizers.SGD(lr, momentum=spec.momentum, nesterov=spec.nesterov, weight_decay=spec.weight_decay or None)


@OPTIMIZERS.register("adam")
def adam(spec: OptimSpec, lr: float):
    # torch's Adam weight_decay is L2 added to the gradient; Keras's is decoupled: the closest match.
    return keras.optimizers.Adam(lr, weight_decay=spec.weight_decay or None)


@OPTIMIZERS.register("adamw")
def adamw(spec: OptimSpec, lr: float):
    return keras.optimizers.AdamW(lr, weight_decay=spec.weight_decay)


@OPTIMIZERS.register("rmsprop")
def rmsprop(spec: OptimSpec, lr: float):
    return keras.optimizers.RMSprop(lr, rho=RMSPROP_RHO, epsilon=RMSPROP_EPSILON, weight_decay=spec.weight_decay or None)
