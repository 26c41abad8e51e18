"""train.metrics without a framework: the sufficient statistics summed over shards equal scikit-learn on
the whole split, the columns they log, and the spec's checks (names, monitor, export template)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score, recall_score, top_k_accuracy_score

from raykit.history import csv_columns, epoch_line, history_csv, read_history_csv
from raykit.metrics import EvalStats, class_columns, is_metric_column
from raykit.spec import SpecError, load_spec

METRICS = ["top2_acc", "top5_acc", "macro_f1", "per_class_acc"]


def predictions(seed: int, n: int = 301, classes: int = 7):
    """Logits and labels where class 5 is predicted but never true and class 6 neither (a present-only
    class and an absent one, where macro F1 and per-class accuracy must follow scikit-learn's rules)."""
    rng = np.random.default_rng(seed)
    labels = rng.choice(5, n)
    logits = rng.normal(size=(n, classes)) + 1.5 * np.eye(classes)[labels]
    logits[:, 6] -= 10.0
    logits[::17, 5] += 10.0
    return logits, labels


@pytest.mark.parametrize("seed", [0, 1])
def test_two_shards_summed_equal_scikit_learn_on_the_whole_split(seed):
    logits, labels = predictions(seed)
    shards = []
    for rows in (np.arange(0, len(labels), 2), np.arange(1, len(labels), 2)):  # engine.shard_rows for 2 ranks
        stats = EvalStats(7, METRICS, class_names=[f"c{i}" for i in range(7)])
        for start in range(0, len(rows), 64):  # several batches per rank
            batch = rows[start:start + 64]
            stats.add(float(len(batch)), logits[batch], labels[batch])
        shards.append(stats)
    total = shards[0].from_array(shards[0].as_array() + shards[1].as_array())
    values = total.values("val")
    everything = np.arange(7)
    assert values["val_loss"] == 1.0 and values["val_acc"] == pytest.approx(np.mean(logits.argmax(1) == labels))
    for k in (2, 5):
        assert values[f"val_top{k}_acc"] == pytest.approx(top_k_accuracy_score(labels, logits, k=k, labels=everything),
                                                          abs=1e-12)
    assert values["val_macro_f1"] == pytest.approx(f1_score(labels, logits.argmax(1), average="macro", zero_division=0),
                                                   abs=1e-12)
    recall = recall_score(labels, logits.argmax(1), average=None, labels=everything, zero_division=0)
    np.testing.assert_allclose([values[f"val_acc/c{i}"] for i in range(5)], recall[:5], atol=1e-12)
    assert np.isnan(values["val_acc/c5"]) and np.isnan(values["val_acc/c6"])  # no samples of the class


def test_without_extra_metrics_the_statistics_are_the_three_totals():
    stats = EvalStats(10)
    assert not stats.needs_logits and stats.as_array().shape == (3,)
    with pytest.raises(ValueError, match="shape"):
        stats.from_array(np.zeros(4))
    assert EvalStats(10, ["top5_acc"]).needs_logits and EvalStats(10, ["macro_f1"]).as_array().shape == (103,)


def test_per_class_columns_are_named_after_safe_unique_class_names_or_indices():
    assert class_columns("val", 3) == ["val_acc/0", "val_acc/1", "val_acc/2"]
    assert class_columns("test", 4, ["cat dog", "é/x", "cat_dog", ""]) == [
        "test_acc/cat_dog", "test_acc/__x", "test_acc/cat_dog_2", "test_acc/3"]
    assert all(is_metric_column(c) for c in class_columns("val", 3, ["a", "b", "c"]))
    assert not any(is_metric_column(c) for c in ("val_acc", "val_loss", "train_acc", "lr", "epoch"))


def test_metrics_csv_and_the_epoch_line_carry_the_columns_after_val_acc():
    row = {"epoch": 1, "train_loss": 0.5, "train_acc": 0.8, "val_loss": 0.4, "val_acc": 0.9, "val_top5_acc": 0.99,
           "val_macro_f1": 0.88, "val_acc/cat": 0.7, "lr": 0.1, "global_step": 3, "weights_in_sync": True}
    assert csv_columns([row])[:8] == ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_top5_acc",
                                      "val_macro_f1", "val_acc/cat"]
    assert read_history_csv(history_csv([row]))[0]["val_acc/cat"] == 0.7
    line = epoch_line(row, 3, 1.0, 2.0)
    assert "val_top5_acc 0.9900  val_macro_f1 0.8800" in line and "cat" not in line


def test_metric_names_are_checked_with_did_you_mean():
    spec = load_spec(None, ["train.metrics=[top5_acc, macro_f1, per_class_acc]"])
    assert spec.train.metrics == ["top5_acc", "macro_f1", "per_class_acc"]
    with pytest.raises(SpecError) as info:
        load_spec(None, ["train.metrics=[top5_acc, macro_f2, top1_acc, top101_acc, top5_acc]"])
    problem = dict(info.value.problems)["train.metrics"]
    assert "item 1: got 'macro_f2' (did you mean 'macro_f1'?)" in problem and "item 0" not in problem
    assert "item 2: got 'top1_acc', k=1" in problem and "item 3: got 'top101_acc', k=101; accepted: k 2..100" in problem
    assert "item 4: got 'top5_acc' twice" in problem


@pytest.mark.parametrize("field", ["checkpoint.monitor", "tune.metric"])
def test_a_monitored_metric_must_be_one_the_spec_produces(field):
    section, name = field.split(".")
    spec = load_spec(None, [f"{field}=val_macro_f1", "train.metrics=[macro_f1]"])
    assert getattr(getattr(spec, section), name) == "val_macro_f1"
    with pytest.raises(SpecError) as info:
        load_spec(None, [f"{field}=val_top3_acc", "train.metrics=[top5_acc]"])
    assert info.value.fields == [field]
    message = str(info.value)
    assert "'val_top3_acc'" in message and "val_top5_acc" in message and "add 'top3_acc' to train.metrics" in message
    with pytest.raises(SpecError, match="per_class_acc"):  # one column per class: nothing to rank by
        load_spec(None, [f"{field}=val_per_class_acc", "train.metrics=[per_class_acc]"])


def test_the_export_template_may_name_the_spec_s_metrics():
    spec = load_spec(None, ['checkpoint.export_template="{epoch:02d}-{val_macro_f1:.3f}"', "train.metrics=[macro_f1]"])
    assert spec.export_stem({"epoch": 3, "val_macro_f1": 0.91234, "val_acc/cat": 0.5}) == "03-0.912"
    with pytest.raises(SpecError, match="checkpoint.export_template"):
        load_spec(None, ['checkpoint.export_template="{val_macro_f1:.3f}"'])
