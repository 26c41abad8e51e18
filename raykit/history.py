"""Per-epoch metric history: the progress line, the CSV, and the "is it better" rule."""

from __future__ import annotations

import csv
import io

COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "epoch_time_s", "samples_per_s",
           "global_step")


def is_improvement(value: float, best: float | None, mode: str) -> bool:
    if best is None:
        return True
    return value > best if mode == "max" else value < best


def epoch_line(metrics: dict, epochs: int, elapsed_s: float, eta_s: float) -> str:
    """One line per epoch: epoch, train loss, val accuracy, elapsed, ETA."""
    return (f"epoch {metrics['epoch']:>3}/{epochs}  train_loss {metrics['train_loss']:.4f}  "
            f"val_loss {metrics['val_loss']:.4f}  val_acc {metrics['val_acc']:.4f}  "
            f"elapsed {elapsed_s:6.1f}s  eta {eta_s:6.1f}s")


def history_csv(history: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    return buffer.getvalue()


def read_history_csv(text: str) -> list[dict]:
    rows = []
    for row in csv.DictReader(io.StringIO(text)):
        rows.append({k: (int(v) if k in ("epoch", "global_step") else float(v)) for k, v in row.items()})
    return rows
