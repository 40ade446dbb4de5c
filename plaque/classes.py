"""The five segmentation classes, their names and the paper's colour scheme."""

from __future__ import annotations

import numpy as np

BACKGROUND, WALL, LUMEN, CALCIFIED, NONCALCIFIED = 0, 1, 2, 3, 4
NUM_CLASSES = 5
CLASS_NAMES: tuple[str, ...] = ("background", "vessel_wall", "lumen", "calcified", "non_calcified")
FOREGROUND: tuple[int, ...] = (WALL, LUMEN, CALCIFIED, NONCALCIFIED)
PLAQUE_CLASSES: tuple[int, ...] = (CALCIFIED, NONCALCIFIED)

# Paper colour scheme: background black, vessel wall white, lumen blue,
# calcified plaque yellow, non-calcified plaque red (RGB in [0, 1]).
CLASS_COLOURS: np.ndarray = np.array(
    [
        [0.0, 0.0, 0.0],
        [1.0, 1.0, 1.0],
        [0.0, 0.35, 1.0],
        [1.0, 0.9, 0.0],
        [0.9, 0.0, 0.0],
    ],
    dtype=np.float32,
)


def colourize(labels: np.ndarray) -> np.ndarray:
    """Map a label map (..., H, W) of class ids to RGB (..., H, W, 3) in the paper's colours."""
    if labels.min(initial=0) < 0 or labels.max(initial=0) >= NUM_CLASSES:
        raise ValueError(f"label values must lie in 0..{NUM_CLASSES - 1}")
    return CLASS_COLOURS[labels.astype(np.intp)]
