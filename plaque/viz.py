"""Figures in the paper's colour scheme (background black, wall white, lumen blue, calcified yellow, non-calcified red)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from plaque.classes import BACKGROUND, CLASS_COLOURS, CLASS_NAMES, colourize


def overlay(image: np.ndarray, labels: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend a grey image ``(H, W)`` in [0, 1] with a label map ``(H, W)``; background stays grey.

    Returns:
        ``(H, W, 3)`` RGB in [0, 1].
    """
    grey = np.repeat(np.clip(image, 0.0, 1.0)[..., None], 3, axis=-1)
    fg = (labels != BACKGROUND)[..., None]
    return np.where(fg, (1 - alpha) * grey + alpha * colourize(labels), grey)


def legend_handles() -> list[Patch]:
    """One legend patch per class, edged so that black and white stay visible."""
    return [Patch(facecolor=c, edgecolor="grey", label=n) for c, n in zip(CLASS_COLOURS, CLASS_NAMES)]


def slice_grid(
    images: Sequence[np.ndarray], labels: Sequence[np.ndarray], titles: Sequence[str] | None = None, alpha: float = 0.5
) -> Figure:
    """One column per slice: the image, the label map in the paper's colours, and their overlay.

    Args:
        images: ``n`` arrays ``(H, W)`` scaled to [0, 1].
        labels: ``n`` label maps ``(H, W)`` with class ids.
        titles: ``n`` column titles.
    """
    n = len(images)
    fig, axes = plt.subplots(3, n, figsize=(2.2 * n, 6.8), squeeze=False)
    for c in range(n):
        axes[0, c].imshow(images[c], cmap="gray", vmin=0, vmax=1)
        axes[1, c].imshow(colourize(labels[c]), interpolation="nearest")
        axes[2, c].imshow(overlay(images[c], labels[c], alpha), interpolation="nearest")
        if titles is not None:
            axes[0, c].set_title(titles[c], fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    for r, name in enumerate(("image", "labels", "overlay")):
        axes[r, 0].set_ylabel(name)
    fig.legend(handles=legend_handles(), loc="lower center", ncol=5, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig
