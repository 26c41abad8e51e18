"""Sweeps over the run spec, without Ray: the search-space language, per-trial specs, and the files a
sweep leaves (trials CSV, plots, best.yaml). :mod:`raykit.ray.tune` runs them with Ray Tune.

A search space maps dotted spec paths to distributions written as plain YAML::

    optim.lr: {loguniform: [1.0e-4, 1.0e-1]}
    model.name: {choice: [cnn, mlp]}
    train.batch_size: {grid: [32, 64]}
    augment.preset: light            # a fixed value
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from typing import Any, Mapping

from raykit.spec import RunSpec, load_spec, spec_path_problem

DISTRIBUTIONS = {
    "uniform": "[low, high]", "loguniform": "[low, high], low > 0", "quniform": "[low, high, q]",
    "randint": "[low, high) integers", "choice": "[value, ...]", "grid": "[value, ...] (every one is tried)",
}


def search_space_problems(space: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(field path, message)`` problems of a search space (paths and distribution syntax)."""
    problems = []
    for path, value in space.items():
        field = f"tune.search_space.{path}"
        if path.split(".")[0] in ("tune", "name", "storage"):
            problems.append((field, "a sweep cannot search the sweep's own settings; accepted: any other spec path"))
            continue
        path_problem = spec_path_problem(path)
        if path_problem:
            problems.append((field, f"not a spec field: {path_problem}"))
            continue
        problem = _distribution_problem(value)
        if problem:
            problems.append((field, problem))
    return problems


def _distribution_problem(value: Any) -> str:
    if not (isinstance(value, Mapping) and len(value) == 1 and next(iter(value)) in DISTRIBUTIONS):
        return ""  # a fixed value (validated with the trial's spec)
    kind, args = next(iter(value.items()))
    accepted = f"accepted: {{{kind}: {DISTRIBUTIONS[kind]}}}"
    if not isinstance(args, list) or not args:
        return f"got {value!r}; {accepted}"
    if kind in ("choice", "grid"):
        return ""
    numbers = [a for a in args if isinstance(a, (int, float)) and not isinstance(a, bool)]
    expected = 3 if kind == "quniform" else 2
    if len(args) != expected or len(numbers) != expected or not numbers[0] < numbers[1]:
        return f"got {value!r}; {accepted} with low < high"
    if kind == "loguniform" and numbers[0] <= 0:
        return f"got {value!r}; {accepted}"
    return ""


def has_grid(space: Mapping[str, Any]) -> bool:
    return any(isinstance(v, Mapping) and "grid" in v for v in space.values())


def searched_paths(space: Mapping[str, Any]) -> list[str]:
    """Paths that vary between trials (distributions, not fixed values)."""
    return [path for path, value in space.items()
            if isinstance(value, Mapping) and len(value) == 1 and next(iter(value)) in DISTRIBUTIONS]


def trial_spec(base: RunSpec, config: Mapping[str, Any], name: str, storage: str) -> RunSpec:
    """The spec of one trial: the base spec with the trial's sampled values, validated (a SpecError here
    fails that trial alone)."""
    spec = load_spec(base, dict(config))
    return dataclasses.replace(spec, name=name, storage=storage)


def best_spec(base: RunSpec, config: Mapping[str, Any]) -> RunSpec:
    """The winning spec to retrain as-is: the trial's values, a fresh name, the sweep's storage."""
    return dataclasses.replace(load_spec(base, dict(config)), name=None)


@dataclasses.dataclass
class TrialRecord:
    """One trial of a finished sweep."""

    trial_id: str
    status: str  # TERMINATED, ERROR, ...
    config: dict
    last_metric: float | None
    best_metric: float | None
    epochs: int
    checkpoint: str | None
    error: str | None = None
    history: list[dict] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class SweepResult:
    """A finished sweep: every trial, the best one's spec and checkpoint, and where the files are."""

    sweep_dir: str
    metric: str
    mode: str
    trials: list[TrialRecord]
    best_trial: TrialRecord | None
    best_spec: RunSpec | None

    @property
    def best_checkpoint(self) -> str | None:
        return self.best_trial.checkpoint if self.best_trial else None

    def table(self) -> list[dict]:
        """One row per trial: id, status, each searched value, final and best metric, epochs, error."""
        rows = []
        for trial in self.trials:
            rows.append({"trial_id": trial.trial_id, "status": trial.status, **trial.config,
                         f"last_{self.metric}": trial.last_metric, f"best_{self.metric}": trial.best_metric,
                         "epochs": trial.epochs, "checkpoint": trial.checkpoint, "error": trial.error or ""})
        return rows

    def summary(self) -> str:
        done = sum(t.status == "TERMINATED" for t in self.trials)
        lines = [f"sweep directory: {self.sweep_dir}", f"trials:          {len(self.trials)} ({done} finished, "
                 f"{sum(t.status == 'ERROR' for t in self.trials)} errored)"]
        if self.best_trial:
            lines.append(f"best trial:      {self.best_trial.trial_id} {self.metric}={self.best_trial.best_metric:.4f} "
                         f"{self.best_trial.config}")
            lines.append(f"best spec:       {self.sweep_dir}/best.yaml  (raykit train it to retrain)")
            lines.append(f"best checkpoint: {self.best_checkpoint}")
        return "\n".join(lines)


def pick_best(trials: list[TrialRecord], mode: str) -> TrialRecord | None:
    scored = [t for t in trials if t.best_metric is not None and not math.isnan(t.best_metric)]
    if not scored:
        return None
    return (max if mode == "max" else min)(scored, key=lambda t: t.best_metric)


def trials_csv(result: SweepResult) -> str:
    rows = result.table()
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def sweep_plot_png(result: SweepResult, searched: list[str]) -> bytes:
    """Left: the metric against epoch for every trial. Then one panel per searched parameter: each
    trial's best metric against its value."""
    from matplotlib.ticker import NullFormatter

    from raykit.plots import figure_png, integer_ticks, new_figure

    panels = 1 + len(searched)
    figure = new_figure(5 * panels, 4)
    axes = figure.subplots(1, panels, squeeze=False)[0]
    for trial in result.trials:
        epochs = [row["epoch"] for row in trial.history]
        axes[0].plot(epochs, [row.get(result.metric) for row in trial.history], marker=".", label=trial.trial_id)
    axes[0].set_xlabel("epoch")
    integer_ticks(axes[0].xaxis)
    axes[0].set_ylabel(result.metric)
    axes[0].set_title(f"{result.metric} per trial")
    if len(result.trials) <= 12:
        axes[0].legend(fontsize=7)
    for ax, path in zip(axes[1:], searched):
        points = [(t.config.get(path), t.best_metric) for t in result.trials if t.best_metric is not None]
        labels = [str(x) for x, _ in points]
        numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x, _ in points)
        ax.scatter([x for x, _ in points] if numeric else labels, [y for _, y in points])
        if numeric and "lr" in path:
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # minor log labels overlap
        ax.set_xlabel(path)
        ax.set_ylabel(f"best {result.metric}")
        ax.set_title(f"best {result.metric} vs {path}")
    return figure_png(figure)
