"""Centerlines derived from label volumes: tubes and trees of known axis, spurs, anisotropic voxels, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.spatial import cKDTree

from plaque.classes import LUMEN, WALL
from plaque.data.centerlines import MIN_BRANCH_MM, derive_centerlines
from plaque.errors import InputError
from plaque.io.geometry import Geometry

WHERE = Path("patient_07/label.nii.gz")


def polyline(points: np.ndarray, step_mm: float = 0.02) -> np.ndarray:
    """``(P', 3)`` points at most ``step_mm`` apart along ``points`` ``(P, 3)``."""
    parts = [points[:1]]
    for a, b in zip(points[:-1], points[1:]):
        n = max(1, int(np.ceil(np.linalg.norm(b - a) / step_mm)))
        parts.append(a + np.linspace(0.0, 1.0, n + 1)[1:, None] * (b - a))
    return np.concatenate(parts)


def grid(extent_mm: tuple[float, float, float], spacing: tuple[float, float, float]) -> Geometry:
    """An axial grid from the origin over ``extent_mm`` ``(z, y, x)``."""
    shape = tuple(int(e / s) + 1 for e, s in zip(extent_mm, spacing))
    return Geometry.axial(shape, np.zeros(3), spacing)


def tubes(geometry: Geometry, axes: list[tuple[np.ndarray, float, float]]) -> np.ndarray:
    """``(Z, Y, X)`` labels: lumen within 60 % of each tube's radius of its axis, wall out to the radius.

    ``axes``: ``[(points (P, 3) LPS mm, radius at the first point, radius at the last point (mm)), ...]``, the
    radius linear along the axis in between; a tube ends in a half sphere at each end of its axis.
    """
    kji = np.stack(np.meshgrid(*[np.arange(n) for n in geometry.shape], indexing="ij"), -1).reshape(-1, 3)
    xyz = geometry.index_to_world(kji)
    relative = np.full(len(xyz), np.inf)  # distance / radius to the nearest tube axis
    for points, r0, r1 in axes:
        dense = polyline(points)
        dist, nearest = cKDTree(dense).query(xyz)
        relative = np.minimum(relative, dist / (r0 + (r1 - r0) * nearest / (len(dense) - 1)))
    labels = np.zeros(len(xyz), np.uint8)
    labels[relative < 1.0] = WALL
    labels[relative < 0.6] = LUMEN
    return labels.reshape(geometry.shape)


def distances(line: np.ndarray, axis: np.ndarray) -> np.ndarray:
    """``(Q,)`` distance (mm) of every point of ``line`` to the polyline ``axis``."""
    return cKDTree(polyline(axis)).query(line)[0]


def curved_axis(z: np.ndarray) -> np.ndarray:
    """``(n, 3)`` points of a curved 3D axis that runs mostly along z (LPS mm)."""
    return np.stack([12.0 + 5.0 * np.sin(z / 8.0), 6.0 + 0.2 * z, z], axis=1)


@pytest.mark.parametrize("spacing", [(0.4, 0.4, 0.4), (0.8, 0.35, 0.35)], ids=["isotropic", "anisotropic"])
def test_curved_tube_gives_its_axis_to_the_scan_edges(spacing: tuple[float, float, float]) -> None:
    geometry = grid((24.0, 14.0, 24.0), spacing)
    axis = curved_axis(np.linspace(-4.0, 28.0, 400))  # runs out of the scan at the bottom and the top
    lines = derive_centerlines(tubes(geometry, [(axis, 1.6, 2.4)]), geometry, 0.5, WHERE)
    assert list(lines) == ["V1"]
    line = lines["V1"]
    off = distances(line, axis)
    voxel = max(spacing)
    assert off.mean() < 0.4 * voxel and off.max() < voxel, (off.mean(), off.max())
    inside = curved_axis(np.linspace(0.0, 24.0, 200))
    assert distances(inside, line).max() < 0.5  # the whole axis inside the scan is covered, ends too
    assert line[0, 2] > line[-1, 2]  # from the ostium, the wider end (the top)
    np.testing.assert_allclose(np.linalg.norm(np.diff(line, axis=0), axis=1)[:-1], 0.5, atol=1e-3)


def test_y_tree_is_split_from_the_ostium_outward() -> None:
    geometry = grid((30.0, 16.0, 36.0), (0.5, 0.4, 0.4))
    fork = np.array([18.0, 8.0, 20.0])
    trunk = np.array([[18.0, 8.0, 34.0], fork])  # leaves the scan at the top (z = 30)
    long_arm = np.array([fork, [10.0, 8.0, 12.0], [8.0, 8.0, -2.0]])  # leaves the scan at the bottom
    short_arm = np.array([fork, [28.0, 8.0, 8.0]])  # ends inside the scan, about 16 mm long
    labels = tubes(geometry, [(trunk, 2.4, 2.4), (long_arm, 1.6, 1.6), (short_arm, 1.4, 1.4)])
    lines = derive_centerlines(labels, geometry, 0.5, WHERE)
    assert list(lines) == ["V1", "V1.1"]
    main, side = lines["V1"], lines["V1.1"]
    assert np.linalg.norm(main[0] - [18.0, 8.0, 30.0]) < 0.5  # starts at the ostium, where the trunk leaves the scan
    assert distances(main, np.concatenate([trunk, long_arm[1:]])).max() < 0.5
    assert np.linalg.norm(side[0] - fork) < 2.5  # the side branch starts at the bifurcation ...
    assert distances(side[5:], short_arm).max() < 0.5  # ... and follows the short arm
    assert np.linalg.norm(side[-1] - short_arm[-1]) < 1.5


def test_side_stubs_leave_one_branch_without_detour() -> None:
    geometry = grid((30.0, 14.0, 14.0), (0.5, 0.4, 0.4))
    axis = np.array([[7.0, 7.0, 34.0], [7.0, 7.0, 3.0]])  # from beyond the top to a closed end inside the scan
    stubs = [np.array([[7.0, 7.0, z], [7.0 + dx, 7.0 + dy, z]]) for z, dx, dy in ((20.0, 0.0, 3.6), (14.0, -3.4, 0.0))]
    labels = tubes(geometry, [(axis, 2.0, 2.0), *((stub, 1.5, 1.5) for stub in stubs)])
    lines = derive_centerlines(labels, geometry, 0.5, WHERE)
    assert list(lines) == ["V1"] and distances(lines["V1"], axis).max() < 0.3


def test_bar_two_voxels_across_keeps_its_centerline() -> None:
    """A straight bar 2 x 2 voxels across, whose cross-section is symmetric about a voxel corner: scikit-image's
    3D thinning deletes all of it on the scan's own grid (its issue 3757), so the derivation shifts the grid."""
    geometry = grid((24.0, 6.0, 6.0), (0.5, 0.5, 0.5))
    labels = np.zeros(geometry.shape, np.uint8)
    labels[4:44, 5:7, 5:7] = WALL  # z 2.0 .. 21.5 mm, x and y 2.5 .. 3.0 mm
    lines = derive_centerlines(labels, geometry, 0.5, WHERE)
    assert list(lines) == ["V1"]
    line = lines["V1"]
    assert np.abs(line[:, :2] - 2.75).max() < 0.3  # on the bar's axis ...
    assert np.ptp(line[:, 2]) > 16.0  # ... along most of its 20 mm


def test_vessel_ending_in_a_ring_keeps_its_centerline() -> None:
    """A vessel whose skeleton has one tip, its far end closing in a loop (a vessel model's mask can hold such a
    ring where a hole in it opens onto the scan's edge): the main branch runs from the tip to the loop."""
    geometry = grid((30.0, 16.0, 16.0), (0.5, 0.5, 0.5))
    stick = np.array([[8.0, 8.0, 34.0], [8.0, 8.0, 10.0]])  # leaves the scan at the top
    angle = np.linspace(0.0, 2.0 * np.pi, 200)
    ring = np.stack([8.0 + 3.5 * np.sin(angle), np.full_like(angle, 8.0), 6.5 + 3.5 * np.cos(angle)], axis=1)
    lines = derive_centerlines(tubes(geometry, [(stick, 1.2, 1.2), (ring, 1.2, 1.2)]), geometry, 0.5, WHERE)
    assert list(lines) == ["V1"]
    line = lines["V1"]
    assert distances(line, stick).max() < 0.5
    assert line[0, 2] > 29.5 and line[-1, 2] < 11.5  # from the scan's edge to where the ring begins


def test_empty_label_volume_is_an_input_error() -> None:
    geometry = grid((10.0, 10.0, 10.0), (0.5, 0.5, 0.5))
    with pytest.raises(InputError, match="no vessel voxel") as info:
        derive_centerlines(np.zeros(geometry.shape, np.uint8), geometry, 0.5, WHERE)
    assert info.value.where == str(WHERE)


def test_vessel_shorter_than_the_shortest_branch_is_an_input_error() -> None:
    geometry = grid((16.0, 10.0, 10.0), (0.5, 0.5, 0.5))
    axis = np.array([[5.0, 5.0, 4.0], [5.0, 5.0, 10.0]])  # 6 mm, inside the scan
    with pytest.raises(InputError, match=f"no branch longer than {MIN_BRANCH_MM:g} mm") as info:
        derive_centerlines(tubes(geometry, [(axis, 1.5, 1.5)]), geometry, 0.5, WHERE)
    assert info.value.where == str(WHERE)
