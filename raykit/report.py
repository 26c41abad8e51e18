"""``raykit report``: figures (PNG) and a Markdown summary of a finished run or sweep directory.

A run directory (it has ``metrics.csv``) gets ``curves.png`` (loss and accuracy), ``lr.png``,
``throughput.png``, ``memory.png`` (when peak memory was recorded) and ``summary.md``. A sweep directory
(it has ``trials.csv``) gets ``sweep.png`` (every trial's metric per epoch, the best metric against each
searched parameter) and ``summary.md``. Directories and the output may be local paths or URIs.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json

from raykit import storage
from raykit.history import csv_columns, is_improvement, read_history_csv
from raykit.metrics import is_scalar_column
from raykit.spec import SpecError, TuneSpec, yaml_load
from raykit.tuning import SweepResult, TrialRecord, pick_best, ranked_trials, searched_paths, short_trial_ids

METRICS_FILE, TRIALS_FILE, SPEC_FILE, RESULT_FILE = "metrics.csv", "trials.csv", "spec.yaml", "result.json"
REPORT_DIR = "report"
SUMMARY_COLUMNS = ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "epoch_time_s", "samples_per_s",
                   "peak_rss_mb")


def report(directory: str, out_dir: str | None = None) -> list[str]:
    """Write the figures and ``summary.md`` of a run or sweep directory; return the written locations.

    Args:
        directory: a run directory (``<storage>/<name>`` of ``raykit train``) or a sweep directory
            (of ``raykit tune``), as a local path or URI.
        out_dir: where to write (path or URI); default ``<directory>/report``.

    Raises:
        SpecError: ``directory`` holds neither ``metrics.csv`` nor ``trials.csv``.

    Example::

        from raykit.report import report
        report("runs/my-run")             # ['runs/my-run/report/curves.png', ..., '.../summary.md']
    """
    out_dir = out_dir or storage.join(directory, REPORT_DIR)
    if storage.exists(storage.join(directory, METRICS_FILE)):
        outputs = _run_outputs(directory)
    elif storage.exists(storage.join(directory, TRIALS_FILE)):
        outputs = _sweep_outputs(directory)
    else:
        raise SpecError([("DIR", f"got {directory!r}, which has no {METRICS_FILE} or {TRIALS_FILE}; accepted: "
                                 "a run or sweep directory")])
    written = []
    for name, content in outputs.items():
        location = storage.join(out_dir, name)
        storage.write_bytes(location, content if isinstance(content, bytes) else content.encode())
        written.append(location)
    return written


def _run_outputs(directory: str) -> dict[str, bytes | str]:
    from raykit.plots import figure_png

    history = read_history_csv(storage.read_text(storage.join(directory, METRICS_FILE)))
    if not history:
        raise SpecError([("DIR", f"got {directory!r}, whose {METRICS_FILE} holds no epochs; accepted: a run "
                                 "that finished at least one epoch")])
    spec = _yaml_file(storage.join(directory, SPEC_FILE))
    result_path = storage.join(directory, RESULT_FILE)
    result = json.loads(storage.read_text(result_path)) if storage.exists(result_path) else {}
    title = run_title(spec, directory)
    outputs: dict[str, bytes | str] = {name: figure_png(figure) for name, figure in run_figures(history, title).items()}
    checkpoint = spec.get("checkpoint") or {}
    outputs["summary.md"] = run_summary(history, result, title, checkpoint.get("monitor", "val_acc"),
                                        checkpoint.get("mode", "max"), [name for name in outputs])
    return outputs


def run_figures(history: list[dict], title: str) -> dict:
    """File name -> matplotlib Figure for a run's history; a figure only where its columns were recorded."""
    from raykit.plots import curves_figure, lr_figure, memory_figure, throughput_figure

    figures = {"curves.png": curves_figure(history, title)}
    recorded = {key for row in history for key in row}
    if "lr" in recorded:
        figures["lr.png"] = lr_figure(history, title)
    if {"samples_per_s", "epoch_time_s"} <= recorded:
        figures["throughput.png"] = throughput_figure(history, title)
    if "peak_rss_mb" in recorded:
        figures["memory.png"] = memory_figure(history, title)
    return figures


def run_title(spec: dict, directory: str) -> str:
    """``name (model, framework)`` from the run's spec, as the curves of ``raykit train`` are titled."""
    name = spec.get("name") or _base_name(directory)
    model, framework = (spec.get("model") or {}).get("name"), spec.get("framework")
    return f"{name} ({model}, {framework})" if model and framework else name


def run_summary(history: list[dict], result: dict, title: str, monitor: str, mode: str,
                figures: list[str]) -> str:
    """Markdown: epochs, the best epoch by ``monitor`` and its value, test accuracy (and train.metrics' test
    values), then the metrics of the best and the final epoch side by side (train.metrics' one-value ones
    too; per-class accuracy stays in metrics.csv), then the figures."""
    best = None
    for row in history:
        if row.get(monitor) is not None and is_improvement(row[monitor], best[monitor] if best else None, mode):
            best = row
    best = best or history[-1]
    final = history[-1]
    lines = [f"# Report: {title}", "", "| | |", "|---|---|", f"| epochs | {len(history)} |",
             f"| best epoch (by {monitor}, {mode}) | {best['epoch']} |",
             f"| best {monitor} | {_cell(best.get(monitor))} |"]
    test = result.get("test_metrics") or {}
    if test.get("test_acc") is not None:
        lines.append(f"| test accuracy (best checkpoint) | {test['test_acc']:.4f} "
                     f"({test.get('test_samples', '?')} samples) |")
    lines += [f"| {key} (best checkpoint) | {_cell(value)} |" for key, value in test.items()
              if is_scalar_column(key)]
    if result.get("seconds"):
        lines.append(f"| wall time | {result['seconds']:.1f} s |")
    lines += ["", f"| metric | best epoch ({best['epoch']}) | final epoch ({final['epoch']}) |", "|---|---|---|"]
    shown = [key for key in csv_columns(history) if key in SUMMARY_COLUMNS or is_scalar_column(key)]
    lines += [f"| {key} | {_cell(best.get(key))} | {_cell(final.get(key))} |" for key in shown
              if key in final or key in best]
    return "\n".join(lines + [""] + [f"![{name[:-4]}]({name})" for name in figures]) + "\n"


def _sweep_outputs(directory: str) -> dict[str, bytes | str]:
    from raykit.tuning import sweep_plot_png

    result, search_space, name = load_sweep(directory)
    return {"sweep.png": sweep_plot_png(result, search_space, f"sweep {name}"),
            "summary.md": sweep_summary(result, search_space, name)}


def load_sweep(directory: str) -> tuple[SweepResult, dict, str]:
    """``(result, search space, name)`` of a finished sweep, from its ``spec.yaml``, ``trials.csv`` and
    each trial's ``trials/<trial_id>/metrics.csv``."""
    spec = _yaml_file(storage.join(directory, SPEC_FILE))
    tune = {**dataclasses.asdict(TuneSpec()), **(spec.get("tune") or {})}
    searched = searched_paths(tune["search_space"])
    rows = csv.DictReader(io.StringIO(storage.read_text(storage.join(directory, TRIALS_FILE))))
    trials = [_trial_record(directory, row, tune["metric"], searched) for row in rows]
    result = SweepResult(sweep_dir=directory, metric=tune["metric"], mode=tune["mode"], trials=trials,
                         best_trial=pick_best(trials, tune["mode"]), best_spec=None)
    return result, tune["search_space"], spec.get("name") or _base_name(directory)


def _trial_record(directory: str, row: dict, metric: str, searched: list[str]) -> TrialRecord:
    metrics_csv = storage.join(directory, "trials", row["trial_id"], METRICS_FILE)
    history = read_history_csv(storage.read_text(metrics_csv)) if storage.exists(metrics_csv) else []
    return TrialRecord(trial_id=row["trial_id"], status=row.get("status") or "",
                       config={path: yaml_load(row.get(path) or "") for path in searched},
                       last_metric=_number(row.get(f"last_{metric}")), best_metric=_number(row.get(f"best_{metric}")),
                       epochs=int(row.get("epochs") or len(history)), checkpoint=row.get("checkpoint") or None,
                       error=row.get("error") or None, history=history)


def sweep_summary(result: SweepResult, search_space: dict, name: str) -> str:
    """Markdown: the metric, trial counts, the best trial, and every trial best first."""
    searched = searched_paths(search_space)
    short = short_trial_ids([t.trial_id for t in result.trials])
    done, errored = (sum(t.status == status for t in result.trials) for status in ("TERMINATED", "ERROR"))
    lines = [f"# Report: sweep {name}", "", f"metric: {result.metric} ({result.mode}); trials: "
             f"{len(result.trials)} ({done} finished, {errored} errored)", ""]
    if result.best_trial:
        best = result.best_trial
        lines += [f"best trial: {best.trial_id}, best {result.metric} {best.best_metric:.4f}, "
                  + ", ".join(f"{path}={_cell(best.config.get(path))}" for path in searched), ""]
    lines += ["| trial | status | " + " | ".join(searched) + f" | best {result.metric} | epochs |",
              "|---" * (len(searched) + 4) + "|"]
    for trial in ranked_trials(result):
        values = " | ".join(_cell(trial.config.get(path)) for path in searched)
        lines.append(f"| {short[trial.trial_id]} | {trial.status} | {values} | {_cell(trial.best_metric)} | "
                     f"{trial.epochs} |")
    return "\n".join(lines + ["", "![sweep](sweep.png)"]) + "\n"


def _yaml_file(location: str) -> dict:
    return (yaml_load(storage.read_text(location)) or {}) if storage.exists(location) else {}


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None


def _cell(value) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _base_name(directory: str) -> str:
    return directory.rstrip("/").rsplit("/", 1)[-1]


REPORT_EXAMPLES = """\
examples:
  raykit report runs/my-run                 # runs/my-run/report/: curves.png, lr.png, throughput.png,
                                            #   memory.png, summary.md
  raykit report runs/my-sweep --out /tmp/sweep-report   # sweep.png, summary.md
  raykit report s3://my-bucket/runs/my-run  # a run stored on S3 (the report is written beside it)
"""


def add_report_command(commands) -> argparse.ArgumentParser:
    """Add ``report`` to the CLI's sub-commands; run it with :func:`run_report`."""
    parser = commands.add_parser(
        "report", help="write PNG figures and a summary.md of a finished run or sweep",
        description="Plot a finished run (loss/accuracy, learning rate, throughput, peak memory) or sweep\n"
                    "(every trial's metric per epoch, best metric vs each searched parameter) as PNGs, with a\n"
                    "short summary.md beside them.",
        epilog=REPORT_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directory", metavar="RUN_OR_SWEEP_DIR", help="a run or sweep directory (path or URI)")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="directory to write to (path or URI; default: RUN_OR_SWEEP_DIR/report)")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks for errors")
    return parser


def run_report(args: argparse.Namespace) -> int:
    """Write the report and print each written location; 0 (success) on return."""
    for location in report(args.directory, args.out):
        print(f"wrote {location}")
    return 0
