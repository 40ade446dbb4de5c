"""CT volumes as public sets ship them: NIfTI (``.nii``, ``.nii.gz``) and NRRD (``.nrrd``) files.

The grid comes from the NIfTI affine (RAS, turned into the LPS patient coordinates of `plaque.io.geometry`)
or the NRRD header (``space``, ``space directions``, ``space origin``), checked as a DICOM series' geometry is:
finite, invertible, orthogonal axes (no shear), positive spacing, at least 2 slices.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import nibabel as nib
import nrrd
import numpy as np
from nibabel.filebasedimages import ImageFileError
from nibabel.spatialimages import HeaderDataError

from plaque.errors import InputError
from plaque.io.dicom import IDENTITY_TAGS, Series
from plaque.io.geometry import LPS_TO_RAS, Geometry

NIFTI_SUFFIXES = (".nii", ".nii.gz")
NRRD_SUFFIX = ".nrrd"
READ_ERRORS = (ImageFileError, HeaderDataError, OSError, EOFError, ValueError, OverflowError, zlib.error)  # NIfTI
VOLUME_SUFFIXES = (*NIFTI_SUFFIXES, NRRD_SUFFIX)
ORTHOGONAL_TOL = 1e-3  # |cos| between two grid axes
NRRD_SPACES = {  # NRRD "space" -> sign flip into LPS
    "left-posterior-superior": np.array([1.0, 1.0, 1.0]),
    "LPS": np.array([1.0, 1.0, 1.0]),
    "right-anterior-superior": np.array([-1.0, -1.0, 1.0]),
    "RAS": np.array([-1.0, -1.0, 1.0]),
}


def oneline(e: Exception) -> str:
    """An exception's message on one line."""
    return " ".join(str(e).split()) or type(e).__name__


def is_volume_file(path: Path) -> bool:
    """Whether ``path`` is named as a NIfTI or NRRD volume."""
    return Path(path).name.endswith(VOLUME_SUFFIXES)


def read_volume(path: Path) -> tuple[np.ndarray, Geometry]:
    """Read a NIfTI or NRRD volume and its grid.

    Returns:
        ``(Z, Y, X)`` array as stored (NIfTI scaling applied: float32 for scaled data) and its `Geometry`.

    Raises:
        InputError: naming ``path`` and the problem (missing, unreadable, not 3D, bad geometry).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "volume file not found")
    if path.name.endswith(NRRD_SUFFIX):
        data, kji_to_lps = _read_nrrd(path)
    elif path.name.endswith(NIFTI_SUFFIXES):
        data, kji_to_lps = _read_nifti(path)
    else:
        raise InputError(path, f"expected a volume file ({', '.join(VOLUME_SUFFIXES)})")
    return data, _geometry(path, data.shape, kji_to_lps)


def _read_nifti(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(Z, Y, X)`` data and the ``(4, 4)`` LPS affine of ``(i, j, k)`` indices of a NIfTI file."""
    try:
        img = nib.load(path)
        header = img.header
        if int(header["sform_code"]) == 0 and int(header["qform_code"]) == 0:
            raise InputError(path, "the NIfTI file has neither sform nor qform: no patient coordinates")
        shape = img.shape[:3] if len(img.shape) == 4 and img.shape[3] == 1 else img.shape
        if len(shape) != 3:
            raise InputError(path, f"expected a 3D volume, got shape {img.shape}")
        affine = _float32_decimals(img.affine)
        data = np.asanyarray(img.dataobj).reshape(shape)
    except READ_ERRORS as e:
        raise InputError(path, f"cannot read NIfTI (truncated or corrupt): {oneline(e)}") from None
    return data.transpose(2, 1, 0), LPS_TO_RAS @ affine


def _float32_decimals(affine: np.ndarray) -> np.ndarray:
    """A NIfTI header stores its affine as float32: each entry ``(4, 4)`` read as the shortest decimal that its
    float32 value stands for, so that a grid written from DICOM's decimal strings reads back exactly."""
    return np.array([float(str(v)) for v in np.asarray(affine, dtype=np.float32).ravel()]).reshape(4, 4)


def _read_nrrd(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(Z, Y, X)`` data and the ``(4, 4)`` LPS affine of ``(i, j, k)`` indices of a NRRD file."""
    try:
        data, header = nrrd.read(str(path), index_order="F")
    except (nrrd.NRRDError, OSError, EOFError, ValueError, KeyError, TypeError) as e:
        raise InputError(path, f"cannot read NRRD (truncated or corrupt): {oneline(e)}") from None
    if data.ndim != 3:
        raise InputError(path, f"expected a 3D volume, got shape {data.shape}")
    space = header.get("space")
    if space not in NRRD_SPACES:
        raise InputError(path, f"NRRD space {space!r} is not patient coordinates (expected LPS or RAS)")
    units = header.get("space units")
    if units is not None and any(u not in ("mm", "") for u in units):
        raise InputError(path, f"NRRD space units {list(units)}: expected mm")
    directions = header.get("space directions")
    origin = header.get("space origin")
    if directions is None or origin is None:
        raise InputError(path, "NRRD header lacks 'space directions' or 'space origin': no patient coordinates")
    directions, origin = np.asarray(directions, dtype=np.float64), np.asarray(origin, dtype=np.float64)
    if directions.shape != (3, 3) or origin.shape != (3,):
        raise InputError(path, f"NRRD space directions {directions.tolist()} must be 3 vectors of 3 numbers")
    flip = NRRD_SPACES[space]
    affine = np.eye(4)
    affine[:3, :3] = (directions * flip).T  # header rows: the step of each of i, j, k
    affine[:3, 3] = origin * flip
    return data.transpose(2, 1, 0), affine


def _geometry(path: Path, shape: tuple[int, ...], ijk_to_lps: np.ndarray) -> Geometry:
    """The `Geometry` of a ``(Z, Y, X)`` grid whose ``(i, j, k)`` indices map to LPS by ``ijk_to_lps`` ``(4, 4)``."""
    m = ijk_to_lps[:3, :3]
    if not np.isfinite(ijk_to_lps).all():
        raise InputError(path, f"the affine holds non-finite values: {m.tolist()}")
    spacing = np.linalg.norm(m, axis=0)  # (dx, dy, dz)
    if spacing.min() <= 0 or abs(np.linalg.det(m)) < 1e-9 * spacing.prod():
        raise InputError(path, f"the affine is not invertible: {np.round(m, 6).tolist()}")
    axes = m / spacing
    cosines = np.abs(axes.T @ axes - np.eye(3)).max()
    if cosines > ORTHOGONAL_TOL:
        raise InputError(path, f"the grid axes are not orthogonal (sheared grid is not supported): {axes.T.tolist()}")
    if shape[0] < 2:
        raise InputError(path, f"only {shape[0]} slice(s); a volume needs at least 2")
    return Geometry(
        shape=(int(shape[0]), int(shape[1]), int(shape[2])),
        origin=ijk_to_lps[:3, 3].copy(),
        row_dir=axes[:, 0],
        col_dir=axes[:, 1],
        slice_dir=axes[:, 2],
        spacing=(float(spacing[2]), float(spacing[1]), float(spacing[0])),
    )


def read_image(path: Path) -> Series:
    """Read a CT volume file as a `Series` in Hounsfield units (the stored values, NIfTI scaling applied).

    It has no DICOM identity (empty values) and no DICOM headers, so no DICOM Segmentation can reference it.
    """
    data, geometry = read_volume(path)
    if not np.issubdtype(data.dtype, np.number) or not np.isfinite(data).all():
        raise InputError(path, "image values must be finite numbers (Hounsfield units)")
    return Series(np.asarray(data, dtype=np.float32), geometry, {tag: "" for tag in IDENTITY_TAGS}, [])
