"""train.loss without a framework: the spec's checks before Ray (a user loss imported, its signature bound;
focal's keywords) and the NumPy forms every backend is compared with."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

from raykit.losses import cross_entropy, focal, numpy_loss
from raykit.spec import SpecError, load_spec

# A known example (2 samples, 3 classes) and its focal loss at gamma=2, alpha=[1, 2, 0.5], worked by hand:
# p = softmax(logits); loss_n = -sum_c alpha_c t_c (1 - p_c)^2 log p_c.
LOGITS = np.array([[2.0, 0.5, -1.0], [0.0, 0.0, 3.0]])
TARGETS = np.array([[1.0, 0.0, 0.0], [0.2, 0.0, 0.8]])


def hand_focal(gamma: float, alpha) -> np.ndarray:
    p = np.exp(LOGITS) / np.exp(LOGITS).sum(1, keepdims=True)
    return np.array([-sum(alpha[c] * TARGETS[n, c] * (1 - p[n, c]) ** gamma * np.log(p[n, c]) for c in range(3))
                     for n in range(2)])


def test_numpy_focal_is_the_formula_and_cross_entropy_at_gamma_zero():
    np.testing.assert_allclose(focal(LOGITS, TARGETS, gamma=2.0, alpha=[1.0, 2.0, 0.5]), hand_focal(2.0, [1, 2, 0.5]),
                               rtol=1e-12)
    np.testing.assert_allclose(focal(LOGITS, TARGETS, gamma=0.0), cross_entropy(LOGITS, TARGETS), rtol=1e-12)
    assert np.all(focal(LOGITS, TARGETS, gamma=2.0) < cross_entropy(LOGITS, TARGETS))  # easy samples weigh less


@pytest.fixture
def user_losses(tmp_path, monkeypatch):
    """A user module of loss functions on the Python path (NumPy: what the NumPy form hands them)."""
    (tmp_path / "my_losses.py").write_text(textwrap.dedent("""
        import numpy as np

        def ce(logits, targets):
            shifted = logits - logits.max(1, keepdims=True)
            return -(targets * (shifted - np.log(np.exp(shifted).sum(1, keepdims=True)))).sum(1)

        def scaled_mean(logits, targets, scale):
            return scale * ce(logits, targets).mean()

        def matrix(logits, targets):
            return logits

        def two_arguments(logits):
            return logits
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    return "my_losses"


def test_a_user_loss_is_imported_and_its_per_sample_or_mean_result_summed(user_losses):
    labels = np.array([0, 2])
    spec = load_spec(None, [f"train.loss={user_losses}:ce"])
    assert numpy_loss(spec.train, 3)(LOGITS, labels) == pytest.approx(cross_entropy(LOGITS, np.eye(3)[labels]).sum())
    spec = load_spec(None, [f"train.loss={user_losses}:scaled_mean", "train.loss_kwargs={scale: 2.0}"])
    assert numpy_loss(spec.train, 3)(LOGITS, labels) == pytest.approx(2 * cross_entropy(LOGITS, np.eye(3)[labels]).sum())
    with pytest.raises(ValueError, match=r"train.loss: 'my_losses:matrix' returned shape \(2, 3\)"):
        numpy_loss(load_spec(None, [f"train.loss={user_losses}:matrix"]).train, 3)(LOGITS, labels)


@pytest.mark.parametrize("overrides, field, words", [
    (["train.loss=no_such_package.losses:focal"], "train.loss", ["'no_such_package.losses:focal'", "cannot import"]),
    (["train.loss=my_losses:nothing"], "train.loss", ["'my_losses:nothing'", "no callable 'nothing'"]),
    (["train.loss=my_losses:two_arguments"], "train.loss", ["'my_losses:two_arguments'", "signature (logits)",
                                                            "fn(logits, targets, **train.loss_kwargs)"]),
    (["train.loss=my_losses:ce", "train.loss_kwargs={gamma: 1}"], "train.loss", ["['gamma']", "refuses"]),
    (["train.loss=my_losses:scaled_mean"], "train.loss", ["scaled_mean", "refuses"]),  # scale is required
    (["train.loss=focal", "train.loss_kwargs={gama: 1}"], "train.loss_kwargs.gama", ["gama=1", "gamma, alpha"]),
    (["train.loss=focal", "train.loss_kwargs={gamma: -1}"], "train.loss_kwargs.gamma", ["-1", ">= 0"]),
    (["train.loss=focal", "train.loss_kwargs={alpha: [1, 2]}", "model.num_classes=3"], "train.loss_kwargs.alpha",
     ["2 class weights for 3 classes"]),
    (["train.loss_kwargs={gamma: 2}"], "train.loss_kwargs", ["cross_entropy, which takes none"]),
    (["train.loss=focall"], "train.loss", ["'focall' (did you mean 'focal'?)"]),
])
def test_a_bad_loss_is_a_spec_error_naming_field_and_value(user_losses, overrides, field, words):
    with pytest.raises(SpecError) as info:
        load_spec(None, overrides)
    assert info.value.fields == [field]
    for word in words:
        assert word in str(info.value)
