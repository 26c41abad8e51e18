"""PNG plots of a run's metric history (matplotlib, no display needed)."""

from __future__ import annotations

import io


def new_figure(width: float, height: float, dpi: int = 100):
    """A matplotlib Figure drawn off-screen (no display, no pyplot state)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=dpi)


def integer_ticks(axis) -> None:
    """Whole-number ticks only (epochs)."""
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def figure_png(figure) -> bytes:
    """The figure, laid out, as PNG bytes."""
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def curves_png(history: list[dict], title: str) -> bytes:
    """Loss (train and val) and accuracy (train and val) against epoch, side by side, as PNG bytes."""
    epochs = [row["epoch"] for row in history]
    figure = new_figure(10, 4)
    loss_axes, acc_axes = figure.subplots(1, 2)
    for axes, key, label in ((loss_axes, "loss", "loss"), (acc_axes, "acc", "accuracy")):
        axes.plot(epochs, [row[f"train_{key}"] for row in history], marker="o", label=f"train {label}")
        axes.plot(epochs, [row[f"val_{key}"] for row in history], marker="o", label=f"val {label}")
        axes.set_xlabel("epoch")
        integer_ticks(axes.xaxis)
        axes.set_ylabel(label)
        axes.grid(alpha=0.3)
        axes.legend()
    loss_axes.set_title("loss")
    acc_axes.set_title("accuracy")
    figure.suptitle(title)
    return figure_png(figure)


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
