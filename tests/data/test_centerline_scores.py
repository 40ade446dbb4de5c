"""Derived centerlines scored against true ones: CAT08 overlap, and the length of lines that follow none."""

from __future__ import annotations

import numpy as np
import pytest

from plaque.data.centerline_scores import STRAY_MM, compare, stray_length


def line(x0: float, y0: float, length: float) -> np.ndarray:
    """``(P, 3)`` LPS mm: a straight line along z from ``(x0, y0, 0)``, a point every millimetre."""
    z = np.arange(0.0, length + 0.5, 1.0)
    return np.stack([np.full_like(z, x0), np.full_like(z, y0), z], axis=1)


def test_a_line_beside_the_true_one_is_stray_and_one_along_it_is_not() -> None:
    true = [line(0.0, 0.0, 40.0)]
    along = line(0.5, 0.0, 40.0)
    beside = line(STRAY_MM + 3.0, 0.0, 20.0)
    assert stray_length(true, {"V1": along}) == 0.0
    assert stray_length(true, {"V1": along, "V2": beside}) == pytest.approx(20.0)
    assert stray_length(true, {}) == 0.0


def test_a_line_that_leaves_the_true_one_halfway_is_stray_only_past_half() -> None:
    true = [line(0.0, 0.0, 20.0)]
    leaves = np.concatenate([line(0.0, 0.0, 9.0), line(8.0, 0.0, 10.0) + [0.0, 0.0, 10.0]])  # 10 of 21 points follow
    stays = np.concatenate([line(0.0, 0.0, 11.0), line(8.0, 0.0, 8.0) + [0.0, 0.0, 12.0]])  # 12 of 21 follow
    assert stray_length(true, {"a": leaves}) > 0.0
    assert stray_length(true, {"a": stays}) == 0.0


def test_overlap_is_the_share_of_true_points_within_a_millimetre() -> None:
    true = line(0.0, 0.0, 10.0)  # 11 points
    half = line(0.5, 0.0, 4.0)  # covers the true points z = 0..4; z = 5 is 1.12 mm from its end
    assert compare(true, half)["overlap"] == pytest.approx(5 / 11)
