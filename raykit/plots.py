"""PNG plots of a run's metric history (matplotlib, no display needed)."""

from __future__ import annotations

import io


def curves_png(history: list[dict], title: str) -> bytes:
    """Loss (train and val) and accuracy (train and val) against epoch, side by side, as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    epochs = [row["epoch"] for row in history]
    figure = Figure(figsize=(10, 4), dpi=100)
    loss_axes, acc_axes = figure.subplots(1, 2)
    for axes, key, label in ((loss_axes, "loss", "loss"), (acc_axes, "acc", "accuracy")):
        axes.plot(epochs, [row[f"train_{key}"] for row in history], marker="o", label=f"train {label}")
        axes.plot(epochs, [row[f"val_{key}"] for row in history], marker="o", label=f"val {label}")
        axes.set_xlabel("epoch")
        axes.set_ylabel(label)
        axes.grid(alpha=0.3)
        axes.legend()
    loss_axes.set_title("loss")
    acc_axes.set_title("accuracy")
    figure.suptitle(title)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
