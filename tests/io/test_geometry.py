"""Grid geometry: index <-> LPS round trip and the NIfTI RAS affine of the transposed layout."""

from __future__ import annotations

import numpy as np

from plaque.io.geometry import LPS_TO_RAS, Geometry


def oblique() -> Geometry:
    a = np.deg2rad(25.0)
    row = np.array([np.cos(a), np.sin(a), 0.0])
    col = np.array([-np.sin(a) * np.cos(0.3), np.cos(a) * np.cos(0.3), np.sin(0.3)])
    return Geometry(
        shape=(7, 11, 13),
        origin=np.array([-40.0, 12.5, 300.0]),
        row_dir=row,
        col_dir=col,
        slice_dir=np.cross(row, col),
        spacing=(0.4, 0.35, 0.3),
    )


def test_index_world_round_trip() -> None:
    g = oblique()
    kji = np.random.default_rng(0).uniform(0, 10, size=(50, 3))
    np.testing.assert_allclose(g.world_to_index(g.index_to_world(kji)), kji, atol=1e-9)


def test_index_to_world_follows_dicom_conventions() -> None:
    g = oblique()
    np.testing.assert_allclose(g.index_to_world([0, 0, 1]) - g.origin, g.row_dir * 0.3)  # next column
    np.testing.assert_allclose(g.index_to_world([0, 1, 0]) - g.origin, g.col_dir * 0.35)  # next row
    np.testing.assert_allclose(g.index_to_world([2, 0, 0]), g.slice_position(2))


def test_nifti_affine_maps_transposed_indices_to_ras() -> None:
    g = oblique()
    k, j, i = 3, 5, 8
    ras = g.nifti_affine @ np.array([i, j, k, 1.0])
    lps = LPS_TO_RAS @ ras
    np.testing.assert_allclose(lps[:3], g.index_to_world([k, j, i]), atol=1e-9)


def test_matches_detects_shifted_grid() -> None:
    g = oblique()
    moved = Geometry(g.shape, g.origin + np.array([0.0, 0.0, 0.01]), g.row_dir, g.col_dir, g.slice_dir, g.spacing)
    assert g.matches(g)
    assert not g.matches(moved, tol_mm=1e-3)
    assert g.matches(moved, tol_mm=0.02)
