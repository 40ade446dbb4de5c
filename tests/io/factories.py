"""Small synthetic grids, HU volumes and label volumes shared by the I/O tests."""

from __future__ import annotations

import numpy as np

from plaque.io.geometry import Geometry

SHAPE = (4, 16, 16)
TAGS = {"PatientID": "PID-001", "PatientName": "Doe^Jane"}


def axial(shape: tuple[int, int, int] = SHAPE) -> Geometry:
    """An axial grid, 0.5 mm slices and 0.4 mm pixels, away from the origin."""
    return Geometry.axial(shape, np.array([-10.0, 20.0, 30.0]), (0.5, 0.4, 0.4))


def flipped_oblique(shape: tuple[int, int, int] = SHAPE) -> Geometry:
    """Rows rotated 30 degrees about z, columns mirrored: the slice normal (and slice_dir) is -z."""
    c, s = np.cos(np.radians(30.0)), np.sin(np.radians(30.0))
    return Geometry(
        shape=shape,
        origin=np.array([12.5, -7.25, 40.0]),
        row_dir=np.array([c, s, 0.0]),
        col_dir=np.array([s, -c, 0.0]),
        slice_dir=np.array([0.0, 0.0, -1.0]),
        spacing=(0.625, 0.35, 0.45),
    )


def random_hu(shape: tuple[int, int, int] = SHAPE, seed: int = 0) -> np.ndarray:
    """Integer-valued HU in [-1024, 2000)."""
    return np.random.default_rng(seed).integers(-1024, 2000, size=shape).astype(np.float64)


def random_labels(shape: tuple[int, int, int] = SHAPE, seed: int = 0) -> np.ndarray:
    """``(Z, Y, X)`` uint8 values 0..4."""
    return np.random.default_rng(seed).integers(0, 5, size=shape).astype(np.uint8)
