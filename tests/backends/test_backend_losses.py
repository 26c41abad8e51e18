"""train.loss in the torch and tf backends, without Ray: focal equals the NumPy reference (and cross entropy
at gamma 0), and a user loss drives training (a loss scaled by 2 doubles the gradients) and evaluation."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

import raykit.backends.tf  # noqa: F401  (sets the Keras backend before TensorFlow loads)
import tensorflow as tf  # noqa: E402
import torch  # noqa: E402

from raykit.backends.tf import losses as tf_losses  # noqa: E402
from raykit.backends.torch import losses as torch_losses  # noqa: E402
from raykit.engine import evaluate_checkpoint, fit, reference_logits  # noqa: E402
from raykit.losses import cross_entropy, focal  # noqa: E402
from raykit.session import WorkerSession  # noqa: E402
from raykit.spec import load_spec  # noqa: E402
from tests.backends.test_torch import Recorder  # noqa: E402
from tests.test_losses import LOGITS, TARGETS, hand_focal  # noqa: E402

FRAMEWORKS = ("torch", "tf")
LABELS = np.array([0, 2])


def train_and_eval_losses(framework: str, overrides: list[str]) -> tuple[float, float]:
    """(training loss of LOGITS for the soft TARGETS, batch mean; evaluation loss on LABELS, summed) of the
    backend's Loss for the spec ``overrides`` make."""
    train = load_spec(None, overrides).train
    if framework == "torch":
        loss = torch_losses.Loss(train, 3)
        logits = torch.tensor(LOGITS, dtype=torch.float32)
        return (float(loss.batch_mean(logits, torch.tensor(TARGETS, dtype=torch.float32))),
                float(loss.label_sum(logits, torch.from_numpy(LABELS))))
    loss = tf_losses.Loss(train, 3)
    logits = tf.constant(LOGITS, tf.float32)
    return (float(tf.reduce_mean(loss.per_sample(logits, tf.constant(TARGETS, tf.float32)))),
            float(tf.reduce_sum(loss.on_labels(logits, LABELS))))


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_focal_equals_the_numpy_reference_and_cross_entropy_at_gamma_zero(framework):
    smoothed = TARGETS * 0.9 + 0.1 / 3
    hard = np.eye(3)[LABELS]
    ce = train_and_eval_losses(framework, ["train.label_smoothing=0.1"])
    assert ce == pytest.approx((cross_entropy(LOGITS, smoothed).mean(), cross_entropy(LOGITS, hard).sum()), rel=1e-6)
    assert train_and_eval_losses(framework, ["train.loss=focal", "train.loss_kwargs={gamma: 0}",
                                             "train.label_smoothing=0.1"]) == pytest.approx(ce, rel=1e-6)
    got = train_and_eval_losses(framework, ["train.loss=focal", "train.loss_kwargs={alpha: [1, 2, 0.5]}"])
    expected = (hand_focal(2.0, [1, 2, 0.5]).mean(), focal(LOGITS, hard, 2.0, [1, 2, 0.5]).sum())
    assert got == pytest.approx(expected, rel=1e-5)
    assert got[0] != pytest.approx(cross_entropy(LOGITS, TARGETS).mean(), rel=0.1)  # focal is not cross entropy


USER_LOSSES = {
    "torch": """
        import torch
        import torch.nn.functional as F

        SEEN = []

        def ce(logits, targets):
            SEEN.append((isinstance(logits, torch.Tensor), logits.dtype, tuple(logits.shape), tuple(targets.shape),
                         float((targets.sum(1) - 1).abs().max())))
            return -(targets * F.log_softmax(logits, 1)).sum(1)

        def ce_times_2(logits, targets):
            return 2 * ce(logits, targets)
    """,
    "tf": """
        import tensorflow as tf

        def ce(logits, targets):
            return -tf.reduce_sum(targets * tf.nn.log_softmax(logits, 1), 1)

        def ce_times_2(logits, targets):
            return 2 * ce(logits, targets)
    """,
}


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_user_loss_scaled_by_2_doubles_the_gradients_and_the_evaluated_loss(framework, tmp_path, monkeypatch):
    module = f"user_losses_{framework}"
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(USER_LOSSES[framework]))
    monkeypatch.syspath_prepend(str(tmp_path))
    base = [f"framework={framework}", "model.name=mlp", "model.hidden=[16]", "model.dropout=0", "optim.name=sgd",
            "optim.momentum=0", "scaling.num_workers=1", "train.epochs=1", "train.batch_size=64",
            "train.max_steps_per_epoch=1", "train.tensorboard=false"]
    runs = {}
    # One SGD step without momentum moves the weights by -lr * gradient: twice the gradient at lr equals the
    # gradient at 2 lr. Were the user loss ignored, the two runs would differ (lr vs 2 lr of the same loss).
    for name, lr in (("ce_times_2", 0.05), ("ce", 0.1)):
        recorder = Recorder(tmp_path / name)
        spec = load_spec(None, [*base, f"train.loss={module}:{name}", f"optim.lr={lr}"])
        fit(spec, WorkerSession(report=recorder))
        runs[name] = (spec, recorder)
    doubled, single = runs["ce_times_2"][1], runs["ce"][1]
    assert doubled.metrics[0]["train_loss"] == pytest.approx(2 * single.metrics[0]["train_loss"], rel=1e-6)
    images = np.random.default_rng(0).random((16, 8, 8, 1), dtype=np.float32)
    logits = [reference_logits(runs[name][0], str(runs[name][1].checkpoints[-1]), images, (8, 8, 1), 10)
              for name in ("ce_times_2", "ce")]
    np.testing.assert_allclose(logits[0], logits[1], atol=1e-6)
    assert np.abs(logits[0]).max() > 0.01
    # Evaluation runs the user loss too (on the hard labels), in the framework: twice cross entropy.
    checkpoint = str(doubled.checkpoints[-1])
    user = evaluate_checkpoint(runs["ce_times_2"][0], checkpoint)["test_loss"]
    builtin = evaluate_checkpoint(load_spec(None, [*base, "optim.lr=0.05"]), checkpoint)["test_loss"]
    assert user == pytest.approx(2 * builtin, rel=1e-5)
    if framework == "torch":  # the contract: the framework's float32 tensors, soft targets (N, C) summing to 1
        seen = __import__(module).SEEN[0]
        assert seen[:4] == (True, torch.float32, (64, 10), (64, 10)) and seen[4] < 1e-6
