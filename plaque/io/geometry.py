"""Image-grid geometry in DICOM patient coordinates (LPS, millimetres).

Conventions used everywhere in `plaque`:

- A volume array is indexed ``[k, j, i]`` = ``[slice, row, column]`` with shape ``(Z, Y, X)``.
- ``row_dir`` is DICOM's first ImageOrientationPatient triplet: the direction of
  increasing column index ``i``; ``col_dir`` the second triplet, direction of
  increasing row index ``j``; ``slice_dir`` the direction of increasing ``k``.
- ``spacing`` is ``(dz, dy, dx)``: slice increment, row spacing (DICOM PixelSpacing[0])
  and column spacing (PixelSpacing[1]).
- NIfTI files hold the same grid transposed to ``[i, j, k]`` with a RAS affine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass(frozen=True)
class Geometry:
    """Voxel grid of a CT volume in patient coordinates.

    Attributes:
        shape: ``(Z, Y, X)`` voxels.
        origin: ``(3,)`` LPS position (mm) of voxel ``[0, 0, 0]`` (ImagePositionPatient of slice 0).
        row_dir: ``(3,)`` unit vector along increasing column index.
        col_dir: ``(3,)`` unit vector along increasing row index.
        slice_dir: ``(3,)`` unit vector along increasing slice index.
        spacing: ``(dz, dy, dx)`` in mm.
    """

    shape: tuple[int, int, int]
    origin: np.ndarray
    row_dir: np.ndarray
    col_dir: np.ndarray
    slice_dir: np.ndarray
    spacing: tuple[float, float, float]

    @classmethod
    def axial(cls, shape: tuple[int, int, int], origin: np.ndarray, spacing: tuple[float, float, float]) -> Geometry:
        """An axial grid: rows along +P (y), columns along +L (x), slices along +S (z)."""
        return cls(
            shape=tuple(int(s) for s in shape),
            origin=np.asarray(origin, dtype=np.float64),
            row_dir=np.array([1.0, 0.0, 0.0]),
            col_dir=np.array([0.0, 1.0, 0.0]),
            slice_dir=np.array([0.0, 0.0, 1.0]),
            spacing=tuple(float(s) for s in spacing),
        )

    @property
    def affine_lps(self) -> np.ndarray:
        """``(4, 4)`` matrix mapping homogeneous ``(k, j, i, 1)`` indices to LPS mm."""
        dz, dy, dx = self.spacing
        a = np.eye(4)
        a[:3, 0] = self.slice_dir * dz
        a[:3, 1] = self.col_dir * dy
        a[:3, 2] = self.row_dir * dx
        a[:3, 3] = self.origin
        return a

    @property
    def nifti_affine(self) -> np.ndarray:
        """``(4, 4)`` RAS affine of the NIfTI layout ``[i, j, k]`` (columns, rows, slices)."""
        perm = np.zeros((4, 4))
        perm[0, 2] = perm[1, 1] = perm[2, 0] = perm[3, 3] = 1.0  # (i, j, k) -> (k, j, i)
        return LPS_TO_RAS @ self.affine_lps @ perm

    def index_to_world(self, kji: np.ndarray) -> np.ndarray:
        """Map indices ``(..., 3)`` in ``(k, j, i)`` order to LPS mm ``(..., 3)``."""
        a = self.affine_lps
        return np.asarray(kji, dtype=np.float64) @ a[:3, :3].T + a[:3, 3]

    def world_to_index(self, xyz: np.ndarray) -> np.ndarray:
        """Map LPS mm ``(..., 3)`` to fractional ``(k, j, i)`` indices ``(..., 3)``."""
        a = self.affine_lps
        return (np.asarray(xyz, dtype=np.float64) - a[:3, 3]) @ np.linalg.inv(a[:3, :3]).T

    def slice_position(self, k: int) -> np.ndarray:
        """ImagePositionPatient ``(3,)`` of slice ``k``."""
        return self.origin + self.slice_dir * self.spacing[0] * k

    def matches(self, other: Geometry, tol_mm: float = 1e-3) -> bool:
        """True when both grids have the same shape and place every voxel within ``tol_mm``."""
        if tuple(self.shape) != tuple(other.shape):
            return False
        corners = np.array(
            [[k, j, i] for k in (0, self.shape[0] - 1) for j in (0, self.shape[1] - 1) for i in (0, self.shape[2] - 1)],
            dtype=np.float64,
        )
        return bool(np.abs(self.index_to_world(corners) - other.index_to_world(corners)).max() <= tol_mm)
