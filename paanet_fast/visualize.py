"""Pictures of a run: training curves, a panel of validation samples with their GAMs, overlays.

Uses matplotlib's object API with the Agg canvas (no pyplot), so importing this module never
changes the caller's matplotlib backend.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .atomic import atomic_path

_OVERLAY_COLOUR = np.array([255, 40, 40], dtype=np.float32)
# Label overlays: class k (1-based) gets colour k-1, cycling; the first is the binary overlay's red.
_CLASS_COLOURS = np.array([[255, 40, 40], [40, 220, 40], [40, 120, 255], [255, 220, 0], [230, 60, 230],
                           [0, 220, 220], [255, 140, 0], [150, 90, 255]], dtype=np.float32)
# Under the sample panel: its GAM columns show G itself, also for the reverse blocks, which weight
# their features by 1 - G (where G is dark).
GAM_CAPTION = "GAM columns show G = sigmoid(GAM logits); blocks marked 'rev' attend with 1 - G (where G is dark)"


def _save(figure: Figure, path: Path) -> None:
    FigureCanvasAgg(figure)
    with atomic_path(Path(path)) as tmp:
        figure.savefig(tmp, format="png", dpi=100)


def save_training_curves(history: Sequence[dict], path: Path) -> None:
    """Losses and validation scores per epoch (rows of metrics.csv) as a two-panel PNG."""
    epochs = [row["epoch"] for row in history]
    figure = Figure(figsize=(10, 4), layout="constrained")
    losses, scores = figure.subplots(1, 2)
    for key, label in (("train_loss", "train"), ("val_loss", "validation")):
        losses.plot(epochs, [row[key] for row in history], marker="o", label=label)
    losses.set(title="loss", xlabel="epoch")
    losses.legend()
    for key in ("val_dsc", "val_miou", "val_recall", "val_precision"):
        scores.plot(epochs, [row[key] for row in history], marker="o", label=key.removeprefix("val_"))
    scores.set(title="validation scores", xlabel="epoch", ylim=(0, 1))
    scores.legend()
    for axis in (losses, scores):
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    _save(figure, path)


def save_sample_panel(images: Sequence[np.ndarray], masks: Sequence[np.ndarray], predictions: Sequence[np.ndarray],
                      gams: Sequence[Sequence[np.ndarray]], gam_titles: Sequence[str], row_titles: Sequence[str],
                      path: Path, title: str, caption: str | None = None) -> None:
    """One row per sample: image (H, W, 3) uint8, ground truth and prediction (H, W) bool, then
    every GAM (H, W) in [0, 1] (the sigmoid of the GAM logits), titled by `gam_titles`; `caption`
    goes under the panel."""
    columns = 3 + len(gam_titles)
    figure = Figure(figsize=(1.7 * columns, 1.8 * len(images) + 0.4), layout="constrained")
    figure.suptitle(title)
    axes = np.atleast_2d(figure.subplots(len(images), columns, squeeze=False))
    headers = ["image", "ground truth", "prediction", *gam_titles]
    for row, (image, mask, prediction, sample_gams) in enumerate(zip(images, masks, predictions, gams)):
        panels = [(image, {}), (mask, {"cmap": "gray", "vmin": 0, "vmax": 1}),
                  (prediction, {"cmap": "gray", "vmin": 0, "vmax": 1}),
                  *((gam, {"cmap": "magma", "vmin": 0, "vmax": 1}) for gam in sample_gams)]
        for column, (picture, style) in enumerate(panels):
            axis = axes[row, column]
            axis.imshow(picture, interpolation="nearest", **style)
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(headers[column], fontsize=8)
        axes[row, 0].set_ylabel(row_titles[row], fontsize=7)
    if caption:
        figure.supxlabel(caption, fontsize=8)
    _save(figure, path)


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """(H, W, 3) uint8 image with the (H, W) bool mask tinted red."""
    blended = image.astype(np.float32)
    blended[mask] = (1 - alpha) * blended[mask] + alpha * _OVERLAY_COLOUR
    return blended.round().astype(np.uint8)


def label_overlay(image: np.ndarray, labels: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """(H, W, 3) uint8 image with each class of the (H, W) labels (0 background, 1..N) tinted its own colour."""
    blended = image.astype(np.float32)
    found = labels > 0
    colours = _CLASS_COLOURS[(labels[found].astype(np.int64) - 1) % len(_CLASS_COLOURS)]
    blended[found] = (1 - alpha) * blended[found] + alpha * colours
    return blended.round().astype(np.uint8)
