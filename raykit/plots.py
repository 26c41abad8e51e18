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


def augment_grid_png(columns_nhwc: list, rescale_augmented: bool) -> bytes:
    """A grid with one row per image and one column per version (first the original, then augmented
    ones), as PNG bytes. Each column is an (N, H, W, C) array; 1 channel is drawn in grayscale. With
    ``rescale_augmented`` (a normalize op ran) augmented images are min-max scaled for display;
    otherwise values are clipped to [0, 1] so brightness and contrast changes stay visible."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    titles = ["original"] + [f"augmented {i}" for i in range(1, len(columns_nhwc))]
    rows = len(columns_nhwc[0])
    figure = Figure(figsize=(2 * len(titles), 2 * rows), dpi=80)
    axes = figure.subplots(rows, len(titles), squeeze=False)
    for column, (title, images) in enumerate(zip(titles, columns_nhwc)):
        for row in range(rows):
            shown = _displayable(images[row], rescale_augmented and column > 0)
            axes[row][column].imshow(shown, cmap="gray" if shown.ndim == 2 else None, vmin=0.0, vmax=1.0)
            axes[row][column].set_axis_off()
        axes[0][column].set_title(title)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _displayable(image_hwc, rescale: bool):
    """An (H, W) or (H, W, 3) image in [0, 1] for imshow."""
    import numpy as np

    image_hwc = np.asarray(image_hwc, dtype=np.float32)
    if rescale:
        low, high = image_hwc.min(), image_hwc.max()
        image_hwc = (image_hwc - low) / (high - low) if high > low else np.zeros_like(image_hwc)
    image_hwc = np.clip(image_hwc, 0.0, 1.0)
    return image_hwc[..., 0] if image_hwc.shape[-1] == 1 else image_hwc
