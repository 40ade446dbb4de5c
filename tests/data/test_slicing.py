"""Cross-sections along centerlines, axial crops, windowing and resizing on synthetic tubes."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from plaque.data.slicing import (
    arclength,
    cross_sections,
    resample_centerline,
    resize,
    transport_frames,
    window,
)
from plaque.io.geometry import Geometry

LUMEN_MM, WALL_MM = 1.6, 2.4
HU = {0: -80.0, 1: 60.0, 2: 400.0, 3: 900.0}


def tube(
    geometry: Geometry, centerline: np.ndarray, marker_dir: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """HU and labels of a lumen (2) in a wall ring (1) around a densely sampled centerline.

    With ``marker_dir``, the wall on that side of the centerline is calcified (3): an eccentric plaque.
    """
    kji = np.stack(np.meshgrid(*[np.arange(n) for n in geometry.shape], indexing="ij"), -1).reshape(-1, 3)
    xyz = geometry.index_to_world(kji)
    dist, nearest = cKDTree(centerline).query(xyz)
    labels = np.zeros(len(xyz), np.uint8)
    labels[dist < WALL_MM] = 1
    if marker_dir is not None:
        side = (xyz - centerline[nearest]) @ marker_dir > 0.5
        labels[(dist < WALL_MM) & side] = 3
    labels[dist < LUMEN_MM] = 2
    labels = labels.reshape(geometry.shape)
    hu = np.vectorize(HU.get)(labels).astype(np.float32)
    return hu, labels


def line(a: np.ndarray, b: np.ndarray, n: int = 400) -> np.ndarray:
    return a + np.linspace(0.0, 1.0, n)[:, None] * (b - a)


def moments(mask: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Centroid ``(row, col)``, and the two principal standard deviations (px) of a 2D mask."""
    r, c = np.nonzero(mask)
    pts = np.stack([r, c], 1).astype(float)
    evals = np.linalg.eigvalsh(np.cov(pts.T))
    return pts.mean(0), float(np.sqrt(evals[0])), float(np.sqrt(evals[1]))


GEOM = Geometry.axial((48, 64, 64), origin=np.array([-12.0, -12.0, -10.0]), spacing=(0.45, 0.40, 0.35))
CENTRE = (32 - 1) / 2


def test_arclength_runs_from_zero_to_the_polyline_length() -> None:
    line = np.array([[0.0, 0.0, 0.0], [3.0, 4.0, 0.0], [3.0, 4.0, 12.0], [3.0, 4.0, 12.0]])
    np.testing.assert_allclose(arclength(line), [0.0, 5.0, 17.0, 17.0])
    np.testing.assert_allclose(arclength(line[:1]), [0.0])
    helix = np.stack([np.cos(t := np.linspace(0, 2 * np.pi, 2001)), np.sin(t), 0.5 * t], axis=1)
    assert arclength(helix)[-1] == pytest.approx(2 * np.pi * np.hypot(1.0, 0.5), rel=1e-6)
    assert len(resample_centerline(helix, 0.5)) == int(arclength(helix)[-1] / 0.5) + 1


def test_straight_tube_gives_centred_circles_of_the_right_radius() -> None:
    mid = GEOM.index_to_world(np.array([0.0, 31.5, 31.5]))
    cl = line(mid, mid + np.array([0.0, 0.0, 47 * 0.45]))
    hu, labels = tube(GEOM, cl)
    images, labs, spacing, kept = cross_sections(hu, labels, GEOM, cl, crop_px=32, step_mm=0.5)
    assert spacing == pytest.approx(0.35)  # the finest in-plane spacing
    assert images.shape == labs.shape == (len(kept), 32, 32) and images.dtype == np.float32 and labs.dtype == np.uint8
    assert len(kept) == len(resample_centerline(cl, 0.5))
    for lab in labs:
        lumen = lab == 2
        centroid, s1, s2 = moments(lumen)
        assert np.abs(centroid - CENTRE).max() < 0.5
        assert np.sqrt(lumen.sum() / np.pi) * spacing == pytest.approx(LUMEN_MM, rel=0.06)
        assert np.sqrt((lumen | (lab == 1)).sum() / np.pi) * spacing == pytest.approx(WALL_MM, rel=0.06)
        assert s1 / s2 > 0.9
    assert np.allclose(images[:, 14:18, 14:18], HU[2]) and np.allclose(images[:, :3, :3], HU[0])


@pytest.mark.parametrize("kind", ["oblique", "curved"])
def test_lumen_stays_centred_and_round(kind: str) -> None:
    c = GEOM.index_to_world(np.array([23.5, 31.5, 31.5]))
    if kind == "oblique":
        d = np.array([1.0, 0.6, 1.2]) / np.linalg.norm([1.0, 0.6, 1.2])
        cl = line(c - 8 * d, c + 8 * d)
    else:  # a helix-like arc: curvature and torsion
        s = np.linspace(-1.0, 1.0, 600)
        cl = c + np.stack([5 * np.sin(1.5 * s), 4 * (1 - np.cos(1.5 * s)) - 2, 8 * s], axis=1)
    hu, labels = tube(GEOM, cl)
    images, labs, spacing, kept = cross_sections(hu, labels, GEOM, cl, crop_px=32, step_mm=0.5)
    ends = 3  # near the ends the tube is cut off, so its cross-section is not a disc
    inner = (kept >= ends) & (kept < len(resample_centerline(cl, 0.5)) - ends)
    assert inner.sum() >= 20
    for lab in labs[inner]:
        lumen = lab == 2
        centroid, s1, s2 = moments(lumen)
        assert np.abs(centroid - CENTRE).max() <= 1.0
        assert s1 / s2 > 0.75
        assert np.sqrt(lumen.sum() / np.pi) * spacing == pytest.approx(LUMEN_MM, rel=0.12)


def test_frames_are_orthonormal_and_do_not_twist_or_flip() -> None:
    s = np.linspace(0.0, 4 * np.pi, 2000)
    helix = np.stack([6 * np.cos(s), 6 * np.sin(s), 3 * s], axis=1)
    pts = resample_centerline(helix, 0.5)
    t, u, v = transport_frames(pts, 0.5)
    for a, b in ((t, u), (t, v), (u, v)):
        assert np.abs(np.sum(a * b, axis=1)).max() < 1e-9
    assert np.allclose(np.linalg.norm(u, axis=1), 1.0) and np.allclose(np.cross(u, v), t)
    assert np.sum(u[1:] * u[:-1], axis=1).min() > 0.99  # consecutive normals nearly equal: no flips
    # rotation-minimising: no rotation about the tangent between neighbours (the antisymmetric part of
    # the frame-to-frame rotation in the (u, v) plane); the Frenet frame would turn by torsion * step
    twist = 0.5 * (np.sum(u[1:] * v[:-1], axis=1) - np.sum(v[1:] * u[:-1], axis=1))
    torsion_step = 3 / (6**2 + 3**2) * 0.5
    assert np.abs(twist).max() < 0.01 * torsion_step


def test_eccentric_plaque_keeps_its_angle_along_a_curved_vessel() -> None:
    """A plaque on a fixed side of a planar arc must not spin or flip between consecutive slices.

    The arc's binormal (+y) is the world axis least aligned with the first tangent, so it is the
    first normal ``u`` (image columns): the plaque sits at angle 0 in every slice, up to voxel noise.
    """
    c = GEOM.index_to_world(np.array([23.5, 31.5, 31.5]))
    s = np.linspace(-1.0, 1.0, 600)
    cl = c + np.stack([6 * np.sin(s), np.zeros_like(s), 9 * s], axis=1)  # arc in the x-z plane
    hu, labels = tube(GEOM, cl, marker_dir=np.array([0.0, 1.0, 0.0]))  # plaque towards +y (binormal)
    _, labs, _, kept = cross_sections(hu, labels, GEOM, cl, crop_px=32, step_mm=0.5)
    angles = []
    for lab in labs[3:-3]:
        (r, col), _, _ = moments(lab == 3)
        angles.append(np.degrees(np.arctan2(r - CENTRE, col - CENTRE)))
    assert len(angles) >= 20
    assert np.abs(angles).max() < 15.0  # a flip would be 180 degrees, a twist a drift
    assert abs(np.polyfit(np.arange(len(angles)), angles, 1)[0]) < 0.2  # degrees per slice


def test_labels_come_only_from_the_source() -> None:
    c = GEOM.index_to_world(np.array([23.5, 31.5, 31.5]))
    d = np.array([0.3, -0.5, 1.0]) / np.linalg.norm([0.3, -0.5, 1.0])
    cl = line(c - 6 * d, c + 6 * d)
    hu, labels = tube(GEOM, cl, marker_dir=np.array([1.0, 0.0, 0.0]))
    labels[labels == 1] = 4  # source values {0, 2, 3, 4}: no 1 anywhere
    _, labs, _, _ = cross_sections(hu, labels, GEOM, cl, crop_px=24, step_mm=0.7)
    assert set(np.unique(labs)) <= {0, 2, 3, 4} and {2, 3, 4} <= set(np.unique(labs))
    _, small = resize(np.zeros(labs.shape, np.float32), labs, 17)
    assert set(np.unique(small)) <= {0, 2, 3, 4}


def test_sections_leaving_the_volume_are_skipped_and_counted() -> None:
    mid = GEOM.index_to_world(np.array([0.0, 31.5, 31.5]))
    cl = line(mid - np.array([0, 0, 5.0]), mid + np.array([0, 0, 30.0]))  # starts and ends outside in z
    hu, labels = tube(GEOM, cl)
    _, _, _, kept = cross_sections(hu, labels, GEOM, cl, crop_px=32, step_mm=0.5)
    centers = resample_centerline(cl, 0.5)
    k = GEOM.world_to_index(centers)[:, 0]
    expected = np.flatnonzero((k >= -0.5) & (k <= GEOM.shape[0] - 0.5))
    assert np.array_equal(kept, expected)
    assert 0 < len(centers) - len(kept) < len(centers)
    # a crop wider than the field of view leaves the volume everywhere
    images, _, _, kept = cross_sections(hu, labels, GEOM, cl, crop_px=80, step_mm=0.5)
    assert len(kept) == 0 and images.shape == (0, 80, 80)


def test_window_and_resize() -> None:
    x = np.array([[[-1000.0, -300.0], [500.0, 3000.0]]], dtype=np.float32)
    w = window(x, (-300.0, 1300.0))
    assert w.dtype == np.float32 and np.allclose(w, [[[0.0, 0.0], [0.5, 1.0]]])
    img = np.random.default_rng(0).random((3, 32, 32)).astype(np.float32)
    lab = (img > 0.5).astype(np.uint8) * 4
    small_img, small_lab = resize(img, lab, 16)
    assert small_img.shape == small_lab.shape == (3, 16, 16)
    assert small_img.dtype == np.float32 and small_lab.dtype == np.uint8
    assert 0.0 <= small_img.min() and small_img.max() <= 1.0 and set(np.unique(small_lab)) <= {0, 4}
    same_img, same_lab = resize(img, lab, 32)
    assert same_img is img and same_lab is lab
