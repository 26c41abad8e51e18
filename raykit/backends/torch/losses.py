"""``train.loss`` in torch (see :mod:`raykit.losses` for the losses and the user-loss contract).

The default, cross entropy, runs exactly as before: integer targets go through ``F.cross_entropy`` and
validation sums ``F.cross_entropy`` on the device. Focal and user losses get soft targets (one-hot unless
mixup/cutmix mixed them), label-smoothed first.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from raykit import losses
from raykit.backends.torch.augment import soft_cross_entropy


def focal(logits: torch.Tensor, targets: torch.Tensor, gamma: float = 2.0, alpha=None) -> torch.Tensor:
    """Per-sample multi-class focal loss of float logits and soft targets (N, C) (:func:`raykit.losses.focal`)."""
    log_p = F.log_softmax(logits, dim=1)
    weight = (1.0 - log_p.exp()).clamp(min=0.0).pow(gamma)
    if alpha is not None:
        weight = weight * torch.as_tensor(alpha, dtype=logits.dtype, device=logits.device)
    return -(targets * weight * log_p).sum(dim=1)


class Loss:
    """The spec's loss for ``num_classes`` classes: :meth:`batch_mean` trains, :meth:`label_sum` validates."""

    def __init__(self, train, num_classes: int):
        self.name, self.num_classes, self.smoothing = train.loss, num_classes, train.label_smoothing
        self.kwargs = losses.loss_kwargs(train)
        # None: the default cross entropy, through torch's own fused kernels
        self.function = focal if train.loss == losses.FOCAL else losses.user_loss(train)

    def batch_mean(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The mean loss of float32 ``logits`` for integer labels or soft targets (N, C), smoothed."""
        if self.function is None:
            return soft_cross_entropy(logits, targets, self.smoothing)
        soft = targets.float() if targets.dtype.is_floating_point else F.one_hot(targets, self.num_classes).float()
        return self._per_sample(logits, losses.smooth(soft, self.smoothing)).mean()

    def label_sum(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The loss of float32 ``logits`` on integer ``labels`` (no smoothing), summed over the batch."""
        if self.function is None:
            return F.cross_entropy(logits, labels, reduction="sum")
        return self._per_sample(logits, F.one_hot(labels, self.num_classes).float()).sum()

    def _per_sample(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        values = self.function(logits, targets, **self.kwargs)
        return values.expand(len(logits)) if losses.is_mean(values.shape, len(logits), self.name) else values


def user_loss_sum(spec, num_classes: int):
    """A user loss's sum over a batch of NumPy logits and labels, given to it as torch tensors (float32 logits)."""
    loss = Loss(spec.train, num_classes)
    return lambda logits, labels: float(loss.label_sum(torch.from_numpy(np.asarray(logits, np.float32)),
                                                       torch.from_numpy(np.asarray(labels, np.int64))).detach())
