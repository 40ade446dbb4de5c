"""Label volumes (NIfTI or NRRD, same grid as the CT image) and centerline files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np

from plaque.errors import InputError
from plaque.io.geometry import Geometry
from plaque.io.volume import NIFTI_SUFFIXES, NRRD_SUFFIX, READ_ERRORS, oneline, read_volume

GRID_TOL_MM = 0.01  # label and image grids must agree this well at every corner


def read_json(path: Path) -> object:
    """The parsed JSON of ``path``.

    Raises:
        InputError: the file is not valid UTF-8 JSON (naming the line and column).
    """
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise InputError(path, f"invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    except UnicodeDecodeError:
        raise InputError(path, "invalid JSON: not UTF-8 text") from None


def write_labels(path: Path, labels: np.ndarray, geometry: Geometry) -> None:
    """Write a ``(Z, Y, X)`` label volume as NIfTI (``[i, j, k]`` layout, RAS affine, uint8)."""
    img = nib.Nifti1Image(np.ascontiguousarray(labels.transpose(2, 1, 0)).astype(np.uint8), geometry.nifti_affine)
    img.set_qform(geometry.nifti_affine, code=1)
    img.set_sform(geometry.nifti_affine, code=1)
    img.header.set_xyzt_units("mm")
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))


def write_centerlines(path: Path, centerlines: dict[str, np.ndarray]) -> None:
    """Write ``{vessel name: (P, 3) LPS mm points}`` as JSON ``{"name": [[x, y, z], ...]}``."""
    data = {name: np.round(np.asarray(pts, dtype=np.float64), 4).tolist() for name, pts in centerlines.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def read_labels(path: Path, geometry: Geometry, label_map: dict[int, int]) -> np.ndarray:
    """Read a NIfTI or NRRD label volume on the grid of ``geometry`` and remap it to class ids.

    Args:
        path: ``.nii`` or ``.nii.gz`` file, ``[i, j, k]`` layout (optionally ``[i, j, k, 1]``) with a RAS affine,
            or a ``.nrrd`` file (`plaque.io.volume`).
        geometry: the CT grid the labels must lie on (corners within `GRID_TOL_MM`).
        label_map: source label value -> class id (0..4); every value in the file must be a key.

    Returns:
        ``(Z, Y, X)`` uint8 class ids.

    Raises:
        InputError: naming ``path`` and the problem.
    """
    if not path.is_file():
        raise InputError(path, "label file not found")
    if path.name.endswith(NRRD_SUFFIX):
        data, grid = read_volume(path)
        _check_same_grid(path, grid, geometry)
        return _to_classes(path, data, label_map)
    if not path.name.endswith(NIFTI_SUFFIXES):
        raise InputError(path, f"expected a NIfTI or NRRD label file ({', '.join((*NIFTI_SUFFIXES, NRRD_SUFFIX))})")
    try:
        img = nib.load(path)
    except READ_ERRORS as e:
        raise InputError(path, f"cannot read NIfTI (truncated or corrupt): {oneline(e)}") from None
    shape = img.shape[:3] if len(img.shape) == 4 and img.shape[3] == 1 else img.shape
    if len(shape) != 3:
        raise InputError(path, f"expected a 3D label volume, got shape {img.shape}")
    if shape[::-1] != tuple(geometry.shape):
        raise InputError(
            path,
            f"label shape (Z, Y, X) {shape[::-1]} (NIfTI {img.shape}) differs from the image "
            f"grid {tuple(geometry.shape)}",
        )
    _check_grid(path, img, geometry)
    try:
        data = np.asanyarray(img.dataobj).reshape(shape)
    except READ_ERRORS as e:
        raise InputError(path, f"cannot read NIfTI (truncated or corrupt): {oneline(e)}") from None
    return _to_classes(path, data.transpose(2, 1, 0), label_map)


def _to_classes(path: Path, data: np.ndarray, label_map: dict[int, int]) -> np.ndarray:
    """``(Z, Y, X)`` integer-valued ``data`` remapped to uint8 class ids."""
    if not np.issubdtype(data.dtype, np.integer):
        bad = ~np.isfinite(data) | (data != np.round(data))
        if bad.any():
            raise InputError(path, f"label values must be integers, found {_listing(np.unique(data[bad]))}")
    return _remap(path, data, label_map)


def _check_same_grid(path: Path, grid: Geometry, geometry: Geometry) -> None:
    """A label volume's ``grid`` must have the image ``geometry``'s shape and corners (within `GRID_TOL_MM`)."""
    if tuple(grid.shape) != tuple(geometry.shape):
        raise InputError(
            path, f"label shape (Z, Y, X) {tuple(grid.shape)} differs from the image grid {tuple(geometry.shape)}"
        )
    z, y, x = (n - 1 for n in geometry.shape)
    corners = np.array([[k, j, i] for k in (0, z) for j in (0, y) for i in (0, x)], dtype=np.float64)
    distance = np.linalg.norm(grid.index_to_world(corners) - geometry.index_to_world(corners), axis=1).max()
    if distance > GRID_TOL_MM:
        raise InputError(
            path,
            f"label grid differs from the image grid by {distance:.4g} mm at a corner (tolerance {GRID_TOL_MM} mm)",
        )


def _check_grid(path: Path, img: nib.spatialimages.SpatialImage, geometry: Geometry) -> None:
    """The label affine must place the 8 corner voxels within `GRID_TOL_MM` of the image grid's."""
    x, y, z = geometry.shape[2] - 1, geometry.shape[1] - 1, geometry.shape[0] - 1
    corners = np.array([[i, j, k, 1.0] for i in (0, x) for j in (0, y) for k in (0, z)])
    distance = np.linalg.norm((corners @ img.affine.T - corners @ geometry.nifti_affine.T)[:, :3], axis=1).max()
    if distance > GRID_TOL_MM:
        header = img.header
        no_affine = int(header["sform_code"]) == 0 and int(header["qform_code"]) == 0
        hint = " (the file has neither sform nor qform)" if no_affine else ""
        raise InputError(
            path,
            f"label grid differs from the image grid by {distance:.4g} mm at a corner "
            f"(tolerance {GRID_TOL_MM} mm){hint}",
        )


def _remap(path: Path, values: np.ndarray, label_map: dict[int, int]) -> np.ndarray:
    """Map integer-valued ``values`` through ``label_map`` to uint8 via a lookup table."""
    if not label_map:
        raise InputError(path, "the label map is empty")
    lo, hi = min(label_map), max(label_map)
    outside = (values < lo) | (values > hi)
    if outside.any():
        raise InputError(path, f"label values not in the label map: {_listing(np.unique(values[outside]))}")
    lut = np.full(hi - lo + 1, 255, dtype=np.uint8)
    for source, target in label_map.items():
        lut[source - lo] = target
    classes = lut[values.astype(np.int64) - lo]
    unmapped = classes == 255
    if unmapped.any():
        raise InputError(path, f"label values not in the label map: {_listing(np.unique(values[unmapped]))}")
    return classes


def _listing(values: np.ndarray, limit: int = 10) -> str:
    """Up to ``limit`` values as ``[a, b, ...]``."""
    shown = ", ".join(str(v) for v in values[:limit].tolist())
    return f"[{shown}{', ...' if len(values) > limit else ''}]"


def read_centerlines(path: Path) -> dict[str, np.ndarray]:
    """Read ``{"vessel name": [[x, y, z], ...]}`` (LPS mm) into ``{name: (P, 3) float64}``.

    Raises:
        InputError: for a missing file, invalid JSON, a wrong structure, non-finite
            coordinates or a vessel with fewer than 2 points.
    """
    if not path.is_file():
        raise InputError(path, "centerline file not found")
    data = read_json(path)
    if not isinstance(data, dict) or not data:
        raise InputError(path, 'expected a non-empty object {"vessel name": [[x, y, z], ...], ...}')
    centerlines = {}
    for name, points in data.items():
        if not isinstance(points, list) or not all(_is_point(p) for p in points):
            raise InputError(path, f"vessel {name!r}: expected a list of [x, y, z] number triples")
        if len(points) < 2:
            raise InputError(path, f"vessel {name!r}: {len(points)} point(s), need at least 2")
        if not all(math.isfinite(v) for p in points for v in p):
            raise InputError(path, f"vessel {name!r}: non-finite coordinate (NaN or infinity)")
        centerlines[name] = np.array(points, dtype=np.float64)
    return centerlines


def _is_point(p: object) -> bool:
    """A JSON ``[x, y, z]`` of numbers (booleans are not numbers here)."""
    return (
        isinstance(p, list) and len(p) == 3 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in p)
    )
