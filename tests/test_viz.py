"""The paper's colour scheme: background black, wall white, lumen blue, calcified yellow, non-calcified red."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest

from plaque.classes import colourize
from plaque.viz import overlay, slice_grid


def test_colours_follow_the_paper() -> None:
    rgb = colourize(np.arange(5))
    assert rgb[0].tolist() == [0, 0, 0]
    assert rgb[1].tolist() == [1, 1, 1]
    assert rgb[2].argmax() == 2  # blue
    assert rgb[3][0] > 0.8 and rgb[3][1] > 0.8 and rgb[3][2] < 0.2  # yellow
    assert rgb[4][0] > 0.8 and rgb[4][1] < 0.2 and rgb[4][2] < 0.2  # red


def test_colourize_rejects_unknown_classes() -> None:
    with pytest.raises(ValueError, match="0..4"):
        colourize(np.array([[0, 5]]))


def test_overlay_keeps_background_grey_and_tints_foreground() -> None:
    image = np.full((2, 2), 0.5)
    labels = np.array([[0, 2], [0, 0]])
    out = overlay(image, labels, alpha=1.0)
    np.testing.assert_allclose(out[0, 0], [0.5, 0.5, 0.5])
    np.testing.assert_allclose(out[0, 1], colourize(np.array(2)))


def test_slice_grid_has_three_rows_per_slice() -> None:
    fig = slice_grid([np.zeros((8, 8))] * 2, [np.zeros((8, 8), dtype=np.uint8)] * 2, ["a", "b"])
    assert len(fig.axes) == 6
