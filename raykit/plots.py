"""PNG plots of a run's metric history (matplotlib, no display needed)."""

from __future__ import annotations

import io


def new_figure(width: float, height: float, dpi: int = 100, layout: str | None = None):
    """A matplotlib Figure drawn off-screen (no display, no pyplot state). ``layout="constrained"`` for
    figures with subfigures; others are laid out tightly when rendered."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=dpi, layout=layout)


def integer_ticks(axis) -> None:
    """Whole-number ticks only (epochs)."""
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def figure_png(figure) -> bytes:
    """The figure, laid out, as PNG bytes."""
    if figure.get_layout_engine() is None:
        figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


METRIC_LABELS = {"train_loss": "train loss (cross-entropy)", "val_loss": "val loss (cross-entropy)",
                 "train_acc": "train accuracy (fraction)", "val_acc": "val accuracy (fraction)"}


def metric_label(metric: str) -> str:
    """An axis label for a metric column, with its unit."""
    return METRIC_LABELS.get(metric, metric)


def curves_png(history: list[dict], title: str) -> bytes:
    """:func:`curves_figure` as PNG bytes."""
    return figure_png(curves_figure(history, title))


def curves_figure(history: list[dict], title: str):
    """Loss (train and val) and accuracy (train and val) against epoch, side by side."""
    epochs = [row["epoch"] for row in history]
    figure = new_figure(10, 4)
    loss_axes, acc_axes = figure.subplots(1, 2)
    for axes, key, label in ((loss_axes, "loss", "loss"), (acc_axes, "acc", "accuracy")):
        axes.plot(epochs, [row[f"train_{key}"] for row in history], marker="o", label=f"train {label}")
        axes.plot(epochs, [row[f"val_{key}"] for row in history], marker="o", label=f"val {label}")
        epoch_axes(axes, METRIC_LABELS[f"val_{key}"].replace("val ", ""))
        axes.legend()
    loss_axes.set_title("loss")
    acc_axes.set_title("accuracy")
    figure.suptitle(title)
    return figure


def epoch_axes(axes, ylabel: str) -> None:
    """Epochs on x (whole numbers), ``ylabel`` on y, a light grid."""
    axes.set_xlabel("epoch")
    integer_ticks(axes.xaxis)
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)


def series(history: list[dict], key: str) -> tuple[list, list]:
    """``(epochs, values)`` of the epochs that recorded ``key``."""
    rows = [row for row in history if row.get(key) is not None]
    return [row["epoch"] for row in rows], [row[key] for row in rows]


def lr_figure(history: list[dict], title: str):
    """The learning rate at the end of each epoch; a log axis when it spans more than a decade."""
    epochs, rates = series(history, "lr")
    figure = new_figure(6, 4)
    axes = figure.subplots()
    axes.plot(epochs, rates, marker="o")
    positive = [rate for rate in rates if rate > 0]
    if positive and max(positive) > 10 * min(positive):
        if len(positive) == len(rates):
            axes.set_yscale("log")
        else:  # a schedule that decays to exactly 0 would lose that point on a log axis; symlog keeps it
            axes.set_yscale("symlog", linthresh=min(positive))
    epoch_axes(axes, "learning rate (end of epoch)")
    axes.set_title("learning rate")
    figure.suptitle(title)
    return figure


def throughput_figure(history: list[dict], title: str):
    """Training throughput (samples/s) and wall time of each epoch, side by side."""
    figure = new_figure(10, 4)
    rate_axes, time_axes = figure.subplots(1, 2)
    for axes, key, ylabel, heading in (
            (rate_axes, "samples_per_s", "throughput (training samples/s)", "throughput"),
            (time_axes, "epoch_time_s", "epoch time (s, train + validation)", "epoch time")):
        epochs, values = series(history, key)
        axes.bar(epochs, values, color="C0" if axes is rate_axes else "C1")
        axes.set_ylim(bottom=0)
        epoch_axes(axes, ylabel)
        axes.set_title(heading)
    figure.suptitle(title)
    return figure


def memory_figure(history: list[dict], title: str):
    """The rank-0 worker's peak resident memory after each epoch."""
    epochs, values = series(history, "peak_rss_mb")
    figure = new_figure(6, 4)
    axes = figure.subplots()
    axes.plot(epochs, values, marker="o", color="C2")
    axes.set_ylim(bottom=0, top=max(values) * 1.15)
    epoch_axes(axes, "peak resident memory (MiB)")
    axes.set_title("peak memory of the rank-0 worker")
    figure.suptitle(title)
    return figure


def augment_grid_png(columns_nhwc: list, rescale_augmented: bool) -> bytes:
    """A grid with one row per image and one column per version (first the original, then augmented
    ones), as PNG bytes. Each column is an (N, H, W, C) array; 1 channel is drawn in grayscale. With
    ``rescale_augmented`` (a normalize op ran) augmented images are min-max scaled for display;
    otherwise values are clipped to [0, 1] so brightness and contrast changes stay visible."""
    titles = ["original"] + [f"augmented {i}" for i in range(1, len(columns_nhwc))]
    rows = len(columns_nhwc[0])
    figure = new_figure(2 * len(titles), 2 * rows, dpi=80)
    axes = figure.subplots(rows, len(titles), squeeze=False)
    for column, (title, images) in enumerate(zip(titles, columns_nhwc)):
        for row in range(rows):
            shown = _displayable(images[row], rescale_augmented and column > 0)
            axes[row][column].imshow(shown, cmap="gray" if shown.ndim == 2 else None, vmin=0.0, vmax=1.0)
            axes[row][column].set_axis_off()
        axes[0][column].set_title(title)
    return figure_png(figure)


def _displayable(image_hwc, rescale: bool):
    """An (H, W) or (H, W, 3) image in [0, 1] for imshow."""
    import numpy as np

    image_hwc = np.asarray(image_hwc, dtype=np.float32)
    if rescale:
        low, high = image_hwc.min(), image_hwc.max()
        image_hwc = (image_hwc - low) / (high - low) if high > low else np.zeros_like(image_hwc)
    image_hwc = np.clip(image_hwc, 0.0, 1.0)
    return image_hwc[..., 0] if image_hwc.shape[-1] == 1 else image_hwc


def confusion_png(matrix: list[list[int]], title: str) -> bytes:
    """The confusion matrix as an annotated heat map (rows: true class, columns: predicted)."""
    import numpy as np

    values = np.asarray(matrix)
    size = len(values)
    figure = new_figure(1.0 + 0.55 * size, 0.8 + 0.55 * size)
    axes = figure.subplots()
    image = axes.imshow(values, cmap="Blues")
    figure.colorbar(image, ax=axes, fraction=0.046)
    for row in range(size):
        for column in range(size):
            axes.text(column, row, str(values[row, column]), ha="center", va="center", fontsize=8,
                      color="white" if values[row, column] > values.max() / 2 else "black")
    axes.set_xticks(range(size))
    axes.set_yticks(range(size))
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title(title)
    return figure_png(figure)
