"""Per-epoch metric history: the progress line, the CSV, and the "is it better" rule."""

from __future__ import annotations

import csv
import io
import math
import time
from dataclasses import dataclass, field

from raykit.metrics import is_metric_column, is_scalar_column

COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "epoch_time_s", "samples_per_s",
           "global_step", "peak_rss_mb", "peak_gpu_mb")


def is_improvement(value: float, best: float | None, mode: str) -> bool:
    if best is None:
        return True
    return value > best if mode == "max" else value < best


def epoch_line(metrics: dict, epochs: int, elapsed_s: float, eta_s: float) -> str:
    """One line per epoch: epoch, train loss, val loss and accuracy, train.metrics' one-value metrics
    (per-class accuracy is left to metrics.csv), elapsed, ETA."""
    extra = "".join(f"  {key} {value:.4f}" for key, value in metrics.items() if is_scalar_column(key))
    return (f"epoch {metrics['epoch']:>3}/{epochs}  train_loss {metrics['train_loss']:.4f}  "
            f"val_loss {metrics['val_loss']:.4f}  val_acc {metrics['val_acc']:.4f}{extra}  "
            f"elapsed {elapsed_s:6.1f}s  eta {eta_s:6.1f}s")


def epoch_bar(session, spec, epoch: int, planned_batches: int) -> "EpochBar":
    """Rank 0's bar for one epoch: its samples with ETA, titled with epoch, batch and samples/s."""
    title = f"epoch {epoch}/{spec.train.epochs}"
    return EpochBar(session.epoch_bar(planned_batches * spec.per_worker_batch_size, title), title, planned_batches)


class EpochBar:
    """Counts batches and the worker's own samples/s into the bar's title about once a second: the bar is
    drawn on the driver, whose clock sees log-forwarding delays, not the worker's speed."""

    def __init__(self, bar, title: str, planned_batches: int):
        self.bar, self.title, self.planned = bar, title, planned_batches
        self.batches = self.samples = 0
        self.started = self.shown = time.perf_counter()

    def update(self, samples: int) -> None:
        self.batches += 1
        self.samples += samples
        self.bar.update(samples)
        now = time.perf_counter()
        if now - self.shown >= 1.0:
            self.shown = now
            self.bar.set_description(self._title(now))

    def close(self) -> None:
        self.bar.set_description(self._title(time.perf_counter()))
        self.bar.close()

    def _title(self, now: float) -> str:
        rate = self.samples / max(now - self.started, 1e-9)
        return f"{self.title} batch {self.batches}/{self.planned} {rate:,.0f} samples/s (rank 0)"


def csv_columns(history: list[dict]) -> list[str]:
    """metrics.csv's columns: :data:`COLUMNS`, with the columns of ``train.metrics`` that the rows hold
    (:func:`raykit.metrics.is_metric_column`, in the order first seen) after ``val_acc``."""
    extra = list(dict.fromkeys(key for row in history for key in row if is_metric_column(key)))
    after = COLUMNS.index("val_acc") + 1
    return [*COLUMNS[:after], *extra, *COLUMNS[after:]]


def history_csv(history: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=csv_columns(history), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    return buffer.getvalue()


def read_history_csv(text: str) -> list[dict]:
    rows = []
    for row in csv.DictReader(io.StringIO(text)):
        rows.append({k: (int(v) if k in ("epoch", "global_step") else float(v)) for k, v in row.items() if v != ""})
    return rows


@dataclass
class Progress:
    """What a resume needs besides weights, optimizer and schedule: where a run is, what it has seen."""

    epoch: int = 0  # epochs completed
    global_step: int = 0  # optimizer steps
    best_metric: float | None = None
    stale_epochs: int = 0  # epochs since the monitored metric last improved
    stopped_early: bool = False
    history: list[dict] = field(default_factory=list)
    checkpointed: list[int] = field(default_factory=list)  # epochs whose checkpoint was reported, in order

    def as_state(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_state(cls, state: dict) -> "Progress":
        """The progress saved in a checkpoint (other keys a backend saved beside it are ignored)."""
        return cls(**{key: value for key, value in state.items() if key in cls.__dataclass_fields__})

    def record(self, metrics: dict, monitor: str, mode: str, patience: int, stop_at: float | None = None) -> None:
        """Add an epoch's metrics; track the best ``monitor`` value and early stopping: ``patience`` epochs
        without improvement (0 = off), or ``monitor`` reaching ``stop_at`` (None = off)."""
        self.epoch = metrics["epoch"]
        self.history.append(metrics)
        value = metrics[monitor]
        if is_improvement(value, self.best_metric, mode):
            self.best_metric, self.stale_epochs = value, 0
        else:
            self.stale_epochs += 1
        reached = stop_at is not None and (value >= stop_at if mode == "max" else value <= stop_at)
        self.stopped_early = (bool(patience) and self.stale_epochs >= patience) or reached

    def stop_reason(self, monitor: str, patience: int, stop_at: float | None) -> str:
        """Why the run stopped early, for the log."""
        if stop_at is not None and self.stale_epochs < (patience or 10**9):
            return f"stopping: {monitor} reached train.stop_at={stop_at:g}"
        return f"early stopping: {monitor} has not improved for {patience} epochs"

    def checkpoint_due(self, every_n_epochs: int, epochs: int) -> bool:
        """Every N epochs, after the last one, and when stopping early."""
        return self.epoch % every_n_epochs == 0 or self.epoch == epochs or self.stopped_early

    def best_checkpoint_epoch(self, monitor: str, mode: str, keep: int) -> int | None:
        """The epoch of the checkpoint Ray Train will name best at the end of this run, or None when a
        checkpoint is missing from the record (one written before raykit kept it): Ray's ranking replayed
        over :attr:`checkpointed` -- sorted by the monitored value (NaN lowest), a tie placed after the
        earlier report, the worst beyond ``keep`` deleted but never the latest; then the first best in that
        order, as ``Result.get_best_checkpoint`` picks it."""
        by_epoch = {row["epoch"]: row for row in self.history}
        if not self.checkpointed or any(epoch not in by_epoch for epoch in self.checkpointed):
            return None
        sign = 1.0 if mode == "max" else -1.0

        def score(epoch: int) -> tuple[bool, float]:
            value = sign * by_epoch[epoch][monitor]
            return (False, float("-inf")) if math.isnan(value) else (True, value)

        kept: list[int] = []
        for epoch in self.checkpointed:
            position = len(kept)
            while position and score(kept[position - 1]) > score(epoch):
                position -= 1
            kept.insert(position, epoch)
            kept = [e for e in kept[:-keep] if e == epoch] + kept[-keep:]
        best = kept[0]
        for epoch in kept[1:]:
            value, best_value = by_epoch[epoch][monitor], by_epoch[best][monitor]
            if (value > best_value) if mode == "max" else (value < best_value):
                best = epoch
        return best
