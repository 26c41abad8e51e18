"""`raykit report` on run and sweep directories written by hand (no Ray): files, figures, summary, errors."""

from __future__ import annotations

import argparse
import json
import math
import struct
from pathlib import Path

import pytest

from raykit.history import history_csv
from raykit.report import add_report_command, load_sweep, report, run_figures, run_report
from raykit.spec import SpecError, load_spec
from raykit.tuning import SweepResult, TrialRecord, pick_best, sweep_figure, sweep_plot_png, trials_csv

SEARCH_SPACE = {"optim.lr": {"loguniform": [1e-4, 1e-1]}, "train.batch_size": {"choice": [32, 64, 128]},
                "augment.preset": "light"}


def synthetic_history(epochs: int = 8, best_epoch: int = 6, lr: float = 0.01, rss: bool = True) -> list[dict]:
    """Per-epoch metrics shaped like a real run: falling loss, val accuracy peaking at ``best_epoch``,
    a cosine learning rate from ``lr`` to ``lr / 100``, a slow first epoch."""
    rows = []
    for epoch in range(1, epochs + 1):
        val_acc = 0.97 - 0.02 * abs(epoch - best_epoch) - (0.3 / epoch if epoch < best_epoch else 0.0)
        row = {"epoch": epoch, "train_loss": 2.0 / (epoch + 0.5), "train_acc": min(0.99, 0.6 + 0.05 * epoch),
               "val_loss": 1.9 / (epoch + 0.4) + 0.01 * max(0, epoch - best_epoch), "val_acc": val_acc,
               "lr": lr / 100 + (lr - lr / 100) * (1 + math.cos(math.pi * (epoch - 1) / epochs)) / 2,
               "epoch_time_s": 9.0 if epoch == 1 else 4.0 + 0.1 * epoch, "global_step": 23 * epoch}
        row["samples_per_s"] = 1437 / row["epoch_time_s"]
        if rss:
            row["peak_rss_mb"] = 610.0 + 12.0 * epoch
        rows.append(row)
    return rows


def write_run(run_dir: Path, history: list[dict]) -> Path:
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.csv").write_text(history_csv(history))
    (run_dir / "spec.yaml").write_text(load_spec(None, {"name": "digits-cnn"}).to_yaml())
    (run_dir / "result.json").write_text(json.dumps(
        {"test_metrics": {"test_acc": 0.9612, "test_loss": 0.13, "test_samples": 360}, "seconds": 41.5}))
    return run_dir


def sweep_result(sweep_dir: str, trials: int = 4) -> SweepResult:
    records = []
    for index in range(trials):
        lr = 10 ** (-4 + 3 * index / max(1, trials - 1))
        history = synthetic_history(epochs=5, best_epoch=5, lr=lr)
        for row in history:
            row["val_acc"] -= 0.05 * abs(math.log10(lr) + 2.8)
        best = max(row["val_acc"] for row in history)
        records.append(TrialRecord(trial_id=f"7e1f2_{index:05d}", status="TERMINATED",
                                   config={"optim.lr": lr, "train.batch_size": (32, 64, 128)[index % 3]},
                                   last_metric=history[-1]["val_acc"], best_metric=best, epochs=5,
                                   checkpoint=None, history=history))
    return SweepResult(sweep_dir=sweep_dir, metric="val_acc", mode="max", trials=records,
                       best_trial=pick_best(records, "max"), best_spec=None)


def write_sweep(sweep_dir: Path, trials: int = 4) -> SweepResult:
    result = sweep_result(str(sweep_dir), trials)
    sweep_dir.mkdir(parents=True)
    spec = load_spec(None, {"name": "lr-sweep", "tune.search_space": SEARCH_SPACE})
    (sweep_dir / "spec.yaml").write_text(spec.to_yaml())
    (sweep_dir / "trials.csv").write_text(trials_csv(result))
    for trial in result.trials:
        (sweep_dir / "trials" / trial.trial_id).mkdir(parents=True)
        (sweep_dir / "trials" / trial.trial_id / "metrics.csv").write_text(history_csv(trial.history))
    return result


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's header; fails on anything that is not a PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_run_report_writes_each_figure_as_a_png_and_a_summary(tmp_path):
    run_dir = write_run(tmp_path / "digits-cnn", synthetic_history())
    written = report(str(run_dir))
    names = [Path(location).name for location in written]
    assert names == ["curves.png", "lr.png", "throughput.png", "memory.png", "summary.md"]
    assert all(Path(location).parent == run_dir / "report" for location in written)
    for location in written[:-1]:
        width, height = png_size(Path(location).read_bytes())
        assert 500 <= width <= 2000 and 300 <= height <= 1200, (location, width, height)


def test_every_run_figure_labels_its_axes_and_names_the_run():
    for name, figure in run_figures(synthetic_history(), "digits-cnn (cnn, torch)").items():
        assert figure._suptitle.get_text() == "digits-cnn (cnn, torch)", name
        for axes in figure.axes:
            assert axes.get_xlabel() == "epoch" and axes.get_ylabel() and axes.get_title(), name


def test_memory_figure_only_when_the_run_recorded_peak_memory():
    assert "memory.png" not in run_figures(synthetic_history(rss=False), "run")


def test_learning_rate_axis_is_log_only_when_the_rate_spans_more_than_a_decade():
    decaying = synthetic_history()  # 0.01 down to about 0.0001
    constant = [{**row, "lr": 0.01} for row in decaying]
    assert run_figures(decaying, "run")["lr.png"].axes[0].get_yscale() == "log"
    assert run_figures(constant, "run")["lr.png"].axes[0].get_yscale() == "linear"


def test_summary_names_the_best_epoch_its_value_and_the_test_accuracy(tmp_path):
    run_dir = write_run(tmp_path / "digits-cnn", synthetic_history(best_epoch=6))
    report(str(run_dir), str(tmp_path / "out"))
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "| best epoch (by val_acc, max) | 6 |" in summary
    assert "| best val_acc | 0.97 |" in summary
    assert "| test accuracy (best checkpoint) | 0.9612 (360 samples) |" in summary
    assert "| metric | best epoch (6) | final epoch (8) |" in summary


def test_sweep_report_writes_the_sweep_figure_and_a_summary_of_trials(tmp_path):
    result = write_sweep(tmp_path / "lr-sweep")
    written = report(str(tmp_path / "lr-sweep"), str(tmp_path / "out"))
    assert [Path(location).name for location in written] == ["sweep.png", "summary.md"]
    width, height = png_size((tmp_path / "out" / "sweep.png").read_bytes())
    assert 1000 <= width <= 2000 and 600 <= height <= 1200
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert f"best trial: {result.best_trial.trial_id}, best val_acc {result.best_trial.best_metric:.4f}" in summary


def test_load_sweep_reads_configs_and_each_trials_history(tmp_path):
    written = write_sweep(tmp_path / "lr-sweep")
    loaded, space, name = load_sweep(str(tmp_path / "lr-sweep"))
    assert name == "lr-sweep" and space == SEARCH_SPACE
    assert [t.config for t in loaded.trials] == [t.config for t in written.trials]
    assert [len(t.history) for t in loaded.trials] == [5] * 4
    assert loaded.best_trial.trial_id == written.best_trial.trial_id


def test_sweep_figure_draws_a_line_per_trial_with_short_ids_and_values_in_the_legend(tmp_path):
    figure = sweep_figure(sweep_result(str(tmp_path)), SEARCH_SPACE, "sweep lr-sweep")
    curves = figure.axes[0]
    assert len(curves.get_lines()) == 4
    labels = [text.get_text() for text in curves.get_legend().get_texts()]
    assert labels[0] == "00001  lr=0.001 batch_size=64"  # best first, Ray's shared id prefix dropped
    assert (curves.get_xlabel(), curves.get_ylabel()) == ("epoch", "val accuracy (fraction)")


def test_sweep_legend_names_ten_trials_and_groups_the_rest(tmp_path):
    figure = sweep_figure(sweep_result(str(tmp_path), trials=25), SEARCH_SPACE)
    labels = [text.get_text() for text in figure.axes[0].get_legend().get_texts()]
    assert len(labels) == 11 and labels[-1] == "15 other trials"


def test_loguniform_parameter_gets_a_log_x_axis_and_a_choice_does_not(tmp_path):
    figure = sweep_figure(sweep_result(str(tmp_path)), SEARCH_SPACE)
    panels = {axes.get_xlabel(): axes for axes in figure.axes[1:]}
    assert set(panels) == {"optim.lr (loguniform)", "train.batch_size (choice)"}  # fixed values: no panel
    assert panels["optim.lr (loguniform)"].get_xscale() == "log"
    assert panels["train.batch_size (choice)"].get_xscale() == "linear"
    assert panels["optim.lr (loguniform)"].get_ylabel() == "best val accuracy (fraction)"


def test_end_of_sweep_png_is_the_report_figure(tmp_path):
    assert png_size(sweep_plot_png(sweep_result(str(tmp_path)), SEARCH_SPACE))[0] >= 1000


def test_a_directory_that_is_neither_run_nor_sweep_is_refused(tmp_path):
    with pytest.raises(SpecError) as info:
        report(str(tmp_path))
    assert info.value.problems == [("DIR", f"got {str(tmp_path)!r}, which has no metrics.csv or trials.csv; "
                                           "accepted: a run or sweep directory")]


def test_report_reads_and_writes_uris():
    from raykit import storage

    storage.write_text("memory://runs/uri-run/metrics.csv", history_csv(synthetic_history()))
    written = report("memory://runs/uri-run", "memory://reports/uri-run")
    assert written[0] == "memory://reports/uri-run/curves.png"
    assert png_size(storage.read_bytes(written[0]))[0] >= 500


def test_report_command_prints_what_it_wrote_and_its_help_shows_examples(tmp_path, capsys):
    run_dir = write_run(tmp_path / "digits-cnn", synthetic_history())
    parser = argparse.ArgumentParser(prog="raykit")
    command = add_report_command(parser.add_subparsers(dest="command"))
    assert "raykit report runs/my-sweep --out /tmp/sweep-report" in command.format_help()
    assert run_report(parser.parse_args(["report", str(run_dir), "--out", str(tmp_path / "out")])) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == f"wrote {tmp_path / 'out' / 'curves.png'}" and len(printed) == 5



def test_learning_rate_that_reaches_zero_keeps_every_point_on_a_symlog_axis():
    history = synthetic_history()
    history[0]["lr"] = 0.0  # warmup from zero; the rest still spans over a decade
    assert run_figures(history, "run")["lr.png"].axes[0].get_yscale() == "symlog"


def test_categorical_parameter_lists_its_choices_in_search_space_order(tmp_path):
    result = sweep_result(str(tmp_path), trials=3)
    for trial, name in zip(result.trials, ("mlp", "resnet18", "cnn")):
        trial.config["model.name"] = name
    figure = sweep_figure(result, {"model.name": {"choice": ["cnn", "mlp", "resnet18"]}})
    assert [label.get_text() for label in figure.axes[1].get_xticklabels()] == ["cnn", "mlp", "resnet18"]


def test_a_trial_without_epochs_is_named_with_its_status_in_the_legend(tmp_path):
    result = sweep_result(str(tmp_path), trials=2)
    result.trials.append(TrialRecord(trial_id="7e1f2_00002", status="ERROR", config={"optim.lr": 0.05},
                                     last_metric=None, best_metric=None, epochs=0, checkpoint=None, error="OOM"))
    labels = [text.get_text() for text in sweep_figure(result, SEARCH_SPACE).axes[0].get_legend().get_texts()]
    assert labels[-1] == "00002  lr=0.05 batch_size=None (ERROR)"
