"""Keras optimizers by ``optim.name``, in the same kind of registry as models and LR schedules; the same
names with the same meaning as ``raykit/backends/torch/optim.py`` (a test keeps both equal to
``INFO.optimizer_names``).

"The same meaning" is torch.optim's update rule, step for step: Keras's own optimizers differ in ways
that change training (issue 20; ``tests/test_parity.py`` compares the losses step by step):

* Adam/AdamW: Keras adds epsilon to the *uncorrected* ``sqrt(v)`` (its default, 1e-7, then acts like
  ``1e-7 / sqrt(1 - beta_2**t)``, about 3e-6 on the first step); torch adds it after the bias correction
  and defaults to 1e-8.
* RMSprop: Keras divides by ``sqrt(v + epsilon)``, torch by ``sqrt(v) + epsilon``.
* ``weight_decay`` of sgd, adam and rmsprop: torch adds an L2 term to the gradient (the momentum and the
  moments see it); Keras decays the weights directly. Only adamw decays directly in both.

So the classes below keep Keras's variables (checkpoints and ``LossScaleOptimizer`` work as before) and
compute torch's update.
"""

from __future__ import annotations

import keras
from keras import ops

from raykit.registry import Registry
from raykit.spec import OptimSpec

OPTIMIZERS = Registry("optim.name")

ADAM_BETAS, ADAM_EPSILON = (0.9, 0.999), 1e-8  # torch.optim.Adam's defaults
RMSPROP_RHO, RMSPROP_EPSILON = 0.9, 1e-7  # Keras's defaults; the torch backend uses the same


def build_optimizer(spec: OptimSpec, lr: float, loss_scaling: bool = False):
    """The optimizer ``spec.name`` at learning rate ``lr``; wrapped in a loss scaler for fp16."""
    optimizer = OPTIMIZERS.get(spec.name)(spec, lr)
    return keras.optimizers.LossScaleOptimizer(optimizer) if loss_scaling else optimizer


def _with_l2(gradient, variable, l2: float):
    """torch's ``weight_decay`` for sgd/adam/rmsprop: ``grad + l2 * weight``."""
    gradient = ops.cast(gradient, variable.dtype)
    return ops.add(gradient, ops.multiply(variable, l2)) if l2 else gradient


class TorchSGD(keras.optimizers.SGD):
    """Keras's SGD (for a constant learning rate the same steps as torch's, nesterov included) with
    torch's L2 ``weight_decay``."""

    def __init__(self, learning_rate, l2: float = 0.0, **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.l2 = l2

    def update_step(self, gradient, variable, learning_rate):
        super().update_step(_with_l2(gradient, variable, self.l2), variable, learning_rate)


class TorchAdam(keras.optimizers.Adam):
    """torch.optim.Adam's update; ``l2`` is torch Adam's ``weight_decay``, Keras's own ``weight_decay``
    (decoupled, applied before the step by the base class) is torch AdamW's."""

    def __init__(self, learning_rate, l2: float = 0.0, **kwargs):
        super().__init__(learning_rate, beta_1=ADAM_BETAS[0], beta_2=ADAM_BETAS[1], epsilon=ADAM_EPSILON, **kwargs)
        self.l2 = l2

    def update_step(self, gradient, variable, learning_rate):
        gradient = _with_l2(gradient, variable, self.l2)
        step = ops.cast(self.iterations + 1, variable.dtype)
        correction1 = 1 - ops.power(ops.cast(self.beta_1, variable.dtype), step)
        correction2 = 1 - ops.power(ops.cast(self.beta_2, variable.dtype), step)
        m = self._momentums[self._get_variable_index(variable)]
        v = self._velocities[self._get_variable_index(variable)]
        self.assign_add(m, ops.multiply(ops.subtract(gradient, m), 1 - self.beta_1))
        self.assign_add(v, ops.multiply(ops.subtract(ops.square(gradient), v), 1 - self.beta_2))
        denominator = ops.add(ops.divide(ops.sqrt(v), ops.sqrt(correction2)), self.epsilon)
        step_size = ops.divide(ops.cast(learning_rate, variable.dtype), correction1)
        self.assign_sub(variable, ops.divide(ops.multiply(m, step_size), denominator))


class TorchRMSprop(keras.optimizers.RMSprop):
    """torch.optim.RMSprop's update (no momentum, not centered): ``w -= lr * g / (sqrt(v) + eps)``."""

    def __init__(self, learning_rate, l2: float = 0.0, **kwargs):
        super().__init__(learning_rate, rho=RMSPROP_RHO, epsilon=RMSPROP_EPSILON, **kwargs)
        self.l2 = l2

    def update_step(self, gradient, variable, learning_rate):
        gradient = _with_l2(gradient, variable, self.l2)
        v = self._velocities[self._get_variable_index(variable)]
        self.assign(v, ops.add(ops.multiply(v, self.rho), ops.multiply(ops.square(gradient), 1 - self.rho)))
        denominator = ops.add(ops.sqrt(v), self.epsilon)
        self.assign_sub(variable, ops.divide(ops.multiply(gradient, ops.cast(learning_rate, variable.dtype)),
                                             denominator))


@OPTIMIZERS.register("sgd")
def sgd(spec: OptimSpec, lr: float):
    return TorchSGD(lr, l2=spec.weight_decay, momentum=spec.momentum, nesterov=spec.nesterov)


@OPTIMIZERS.register("adam")
def adam(spec: OptimSpec, lr: float):
    return TorchAdam(lr, l2=spec.weight_decay)


@OPTIMIZERS.register("adamw")
def adamw(spec: OptimSpec, lr: float):
    return TorchAdam(lr, weight_decay=spec.weight_decay or None, name="adamw")


@OPTIMIZERS.register("rmsprop")
def rmsprop(spec: OptimSpec, lr: float):
    return TorchRMSprop(lr, l2=spec.weight_decay)
