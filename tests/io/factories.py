"""Small synthetic grids, HU volumes and label volumes shared by the I/O tests."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import nrrd
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


def write_nifti(path: Path, volume: np.ndarray, geometry: Geometry) -> Path:
    """Write a ``(Z, Y, X)`` volume as NIfTI on ``geometry`` (``[i, j, k]`` layout, RAS affine), dtype kept."""
    img = nib.Nifti1Image(np.ascontiguousarray(volume.transpose(2, 1, 0)), geometry.nifti_affine)
    img.set_sform(geometry.nifti_affine, code=1)
    img.set_qform(geometry.nifti_affine, code=1)
    nib.save(img, str(path))
    return path


def write_nrrd(path: Path, volume: np.ndarray, geometry: Geometry, space: str = "left-posterior-superior") -> Path:
    """Write a ``(Z, Y, X)`` volume as NRRD on ``geometry``, in LPS or (``space`` right-anterior-superior) RAS."""
    flip = np.array([-1.0, -1.0, 1.0]) if space == "right-anterior-superior" else np.ones(3)
    dz, dy, dx = geometry.spacing
    header = {
        "space": space,
        "space directions": np.stack([geometry.row_dir * dx, geometry.col_dir * dy, geometry.slice_dir * dz]) * flip,
        "space origin": geometry.origin * flip,
    }
    nrrd.write(str(path), np.ascontiguousarray(volume.transpose(2, 1, 0)), header, index_order="F")
    return path
