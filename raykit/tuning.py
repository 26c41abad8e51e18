"""Sweeps over the run spec, without Ray: per-trial specs and the files a sweep leaves (trials CSV,
plots, best.yaml). :mod:`raykit.ray.tune` runs them with Ray Tune.

A search space maps dotted spec paths to distributions written as plain YAML; the language itself
(:data:`DISTRIBUTIONS`, :func:`search_space_problems`, :func:`searched_paths`) lives in
:mod:`raykit.spec.search_space`, because validating a spec checks it, and is re-exported here::

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
from typing import Any, Callable, Mapping

from raykit.spec import RunSpec, load_spec
from raykit.spec.search_space import DISTRIBUTIONS, has_grid, search_space_problems, searched_paths

__all__ = ["DISTRIBUTIONS", "SweepResult", "TrialRecord", "best_spec", "has_grid", "pick_best", "ranked_trials",
           "search_space_problems", "searched_paths", "shared_trial_spec", "short_trial_ids", "sweep_figure",
           "sweep_plot_png", "trial_spec", "trials_csv"]


def trial_spec(base: RunSpec, config: Mapping[str, Any], name: str, storage: str) -> RunSpec:
    """The spec of one trial: the base spec with the trial's sampled values, validated (a SpecError here
    fails that trial alone)."""
    spec = load_spec(base, dict(config))
    return dataclasses.replace(spec, name=name, storage=storage)


def shared_trial_spec(base: RunSpec) -> RunSpec:
    """What every trial of a sweep shares: the base spec with the search space's fixed values (not its
    distributions). ``raykit.tune`` checks its starting weights before Ray starts, as ``raykit.train`` does."""
    space = base.tune.search_space
    fixed = {path: value for path, value in space.items() if path not in searched_paths(space)}
    return load_spec(base, fixed) if fixed else base


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
    """A finished sweep: every trial, the best one's spec and checkpoint, and where the files are.

    Returned by :func:`raykit.tune` and by :meth:`raykit.Run.open` on a sweep directory. ``runs`` holds each
    trial that started as a :class:`raykit.Run` (its spec, ``metrics_dataframe``, ``checkpoints``,
    ``load_model()``), in the order of ``trials``; :attr:`best_run` is the best trial's;
    :attr:`result_grid` is Ray Tune's ``ResultGrid`` of the sweep.

    Example::

        sweep = raykit.Run.open("runs/my-sweep")
        model = sweep.best_run.load_model()
        frame = sweep.result_grid.get_dataframe()
    """

    sweep_dir: str
    metric: str
    mode: str
    trials: list[TrialRecord]
    best_trial: TrialRecord | None
    best_spec: RunSpec | None
    runs: list = dataclasses.field(default_factory=list, repr=False)
    grid: Any = dataclasses.field(default=None, repr=False)  # Tune's ResultGrid, once known
    grid_loader: Callable[[], Any] | None = dataclasses.field(default=None, repr=False)  # reads it when asked

    @property
    def best_checkpoint(self) -> str | None:
        return self.best_trial.checkpoint if self.best_trial else None

    @property
    def best_run(self):
        """The best trial as a :class:`raykit.Run` (None when no trial has a metric)."""
        if self.best_trial is None:
            return None
        return next((run for run in self.runs if run.spec.name == self.best_trial.trial_id), None)

    @property
    def result_grid(self):
        """Ray Tune's ``ResultGrid`` of this sweep: the one ``Tuner.fit`` returned, or for a reopened sweep
        one read from its experiment directory (which imports Ray Tune; no Ray cluster is needed)."""
        if self.grid is None and self.grid_loader is not None:
            self.grid = self.grid_loader()
        return self.grid

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
    scored = [t for t in trials if _scored(t)]
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


LEGEND_TRIALS = 10  # trials named in the legend; the rest are drawn in grey as one entry


def sweep_plot_png(result: SweepResult, search_space: Mapping[str, Any], title: str = "") -> bytes:
    """:func:`sweep_figure` as PNG bytes (the sweep's ``sweep.png`` and ``raykit report``'s)."""
    from raykit.plots import figure_png

    return figure_png(sweep_figure(result, search_space, title))


def sweep_figure(result: SweepResult, search_space: Mapping[str, Any], title: str = ""):
    """Top: the metric against epoch, one line per trial, best trials first in a legend beside the axes.
    Below: one panel per searched parameter, each trial's best metric against its value (a log axis for
    ``loguniform`` parameters)."""
    from raykit.plots import new_figure

    searched = searched_paths(search_space)
    figure = new_figure(max(11.0, 4.5 * len(searched)), 8.5 if searched else 4.5, layout="constrained")
    # Subfigures lay out apart: the legend beside the top axes does not narrow the parameter panels.
    top, bottom = figure.subfigures(2, 1) if searched else (figure, None)
    _trial_curves(top.subplots(), result, searched)
    for axes, path in zip(bottom.subplots(1, len(searched), squeeze=False)[0] if searched else [], searched):
        _metric_against(axes, result, path, search_space[path])
    figure.suptitle(title or f"sweep {result.sweep_dir.rstrip('/').rsplit('/', 1)[-1]}")
    return figure


def _trial_curves(axes, result: SweepResult, searched: list[str]) -> None:
    from raykit.plots import epoch_axes, metric_label

    ranked = ranked_trials(result)
    short = short_trial_ids([t.trial_id for t in ranked])
    for place, trial in enumerate(ranked):
        epochs = [row["epoch"] for row in trial.history]
        values = [row.get(result.metric) for row in trial.history]
        if place < LEGEND_TRIALS:
            label = f"{short[trial.trial_id]}  {_values_text(trial.config, searched)}".rstrip()
            if not trial.history:
                label += f" ({trial.status or 'no epochs'})"
            axes.plot(epochs, values, marker=".", linewidth=2.5 if place == 0 else 1.5, label=label)
        else:
            axes.plot(epochs, values, color="grey", alpha=0.5, linewidth=1,
                      label=f"{len(ranked) - LEGEND_TRIALS} other trials" if place == LEGEND_TRIALS else None)
    epoch_axes(axes, metric_label(result.metric))
    axes.set_title(f"{result.metric} per epoch, {len(ranked)} trial{'s' if len(ranked) != 1 else ''}")
    if ranked:
        axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8,
                    title=f"trial (best {result.metric} first)", title_fontsize=8)


def ranked_trials(result: SweepResult) -> list[TrialRecord]:
    """The trials, best metric first; trials without a metric last."""
    def key(trial: TrialRecord) -> tuple:
        if not _scored(trial):
            return (1, 0.0)
        return (0, -trial.best_metric if result.mode == "max" else trial.best_metric)

    return sorted(result.trials, key=key)


def _scored(trial: TrialRecord) -> bool:
    return trial.best_metric is not None and not math.isnan(trial.best_metric)


def short_trial_ids(trial_ids: list[str]) -> dict[str, str]:
    """Each id without the prefix all share up to a ``_`` or ``-`` (Ray's ``7e1f2_00003`` -> ``00003``)."""
    import os

    if len(trial_ids) < 2:
        return {trial_id: trial_id for trial_id in trial_ids}
    prefix = os.path.commonprefix(trial_ids)
    cut = max(prefix.rfind("_"), prefix.rfind("-")) + 1
    return {trial_id: trial_id[cut:] or trial_id for trial_id in trial_ids}


def _values_text(config: Mapping[str, Any], searched: list[str]) -> str:
    """``lr=0.00316 batch_size=64``: the last part of each path, unless two paths end alike."""
    names = [path.rsplit(".", 1)[-1] for path in searched]
    if len(set(names)) < len(names):
        names = searched
    return " ".join(f"{name}={_value_text(config.get(path))}" for name, path in zip(names, searched))


def _value_text(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _metric_against(axes, result: SweepResult, path: str, distribution: Mapping[str, Any]) -> None:
    """Each scored trial's best metric against its value of ``path``; the best trial as a star."""
    from matplotlib.ticker import NullFormatter

    from raykit.plots import metric_label

    kind, args = next(iter(distribution.items()))
    scored = [trial for trial in ranked_trials(result) if _scored(trial)]
    values = [t.config.get(path) for t in scored]
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    if not numeric:  # categories in the order the search space lists them, then any others
        categories = list(dict.fromkeys([str(a) for a in args if kind in ("choice", "grid")] + list(map(str, values))))
        values = [categories.index(str(v)) for v in values]
        axes.set_xticks(range(len(categories)), categories)
        axes.set_xlim(-0.5, len(categories) - 0.5)
    elif kind in ("choice", "grid"):
        axes.set_xticks(sorted(set(values)))  # the values tried, not a linear scale's round numbers
    axes.scatter(values, [t.best_metric for t in scored], label="trial")
    if scored:
        axes.scatter(values[:1], [scored[0].best_metric], marker="*", s=200, color="C3", label="best trial")
        axes.legend(fontsize=8)
    if numeric and kind == "loguniform":
        axes.set_xscale("log")
        axes.xaxis.set_minor_formatter(NullFormatter())  # minor log labels overlap
    axes.set_xlabel(f"{path} ({kind})")
    axes.set_ylabel(f"best {metric_label(result.metric)}")
    axes.set_title(f"best {result.metric} vs {path}")
    axes.grid(alpha=0.3)
