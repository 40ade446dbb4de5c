"""Cut 2D slices out of a CT volume: cross-sections perpendicular to a vessel centerline, or axial tiles.

Slice conventions: a slice is ``(S, S)`` with ``S = crop_px``; its pixel ``[r, c]`` lies at
``center + (r - (S - 1) / 2) * spacing * v + (c - (S - 1) / 2) * spacing * u`` (LPS mm), where
``(u, v, t)`` is a right-handed frame with ``t`` the vessel tangent. The centerline point is
therefore the geometric centre of the slice (between pixels when ``S`` is even).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from plaque.io.geometry import Geometry

TANGENT_SMOOTH_MM = 1.0  # Gaussian sigma (mm of arclength) applied to the centerline tangents
CHUNK_PIXELS = 1 << 22  # sample at most this many pixels per map_coordinates call (bounds memory)


def arclength(points: np.ndarray) -> np.ndarray:
    """``(P,)`` distance along a polyline of ``(P, 3)`` points from its first point, in the points' own
    units; the polyline's length is its last value."""
    steps = np.linalg.norm(np.diff(np.asarray(points, dtype=np.float64), axis=0), axis=1)
    return np.concatenate([[0.0], np.cumsum(steps)])


def resample_centerline(centerline_mm: np.ndarray, step_mm: float) -> np.ndarray:
    """Points every ``step_mm`` of arclength along a polyline.

    Args:
        centerline_mm: ``(P, 3)`` LPS mm points in vessel order.
        step_mm: arclength between output points.

    Returns:
        ``(M, 3)`` points from the first point, spaced ``step_mm`` along the polyline
        (the last one within ``step_mm`` of the end); ``(0, 3)`` without two distinct points.
    """
    pts = np.asarray(centerline_mm, dtype=np.float64).reshape(-1, 3)
    if len(pts) > 1:
        pts = np.concatenate([pts[:1], pts[1:][np.diff(arclength(pts)) > 0]])
    if len(pts) < 2:
        return np.zeros((0, 3))
    arc = arclength(pts)
    s = np.arange(0.0, arc[-1] + 1e-9, step_mm)
    return np.stack([np.interp(s, arc, pts[:, d]) for d in range(3)], axis=1)


def transport_frames(points_mm: np.ndarray, step_mm: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Smoothed unit tangents and a rotation-minimising (parallel-transport) frame along a curve.

    Args:
        points_mm: ``(M, 3)`` points spaced ``step_mm`` apart, ``M >= 2``.
        step_mm: their arclength spacing.

    Returns:
        ``(t, u, v)``, each ``(M, 3)`` unit vectors: tangent, normal and ``v = t x u``. Each normal is the
        previous one turned by the smallest rotation that takes the previous tangent to the new one
        (discrete parallel transport), so consecutive frames neither twist about the tangent nor flip.
        The first normal is the world axis least aligned with the first tangent, made perpendicular to it.
    """
    t = np.gradient(points_mm, axis=0)
    t = ndimage.gaussian_filter1d(t, sigma=TANGENT_SMOOTH_MM / step_mm, axis=0, mode="nearest")
    t /= np.linalg.norm(t, axis=1, keepdims=True)
    u = np.empty_like(t)
    ref = np.eye(3)[np.argmin(np.abs(t[0]))]
    u[0] = ref - (ref @ t[0]) * t[0]
    u[0] /= np.linalg.norm(u[0])
    for n in range(1, len(t)):
        k, c, prev = np.cross(t[n - 1], t[n]), t[n - 1] @ t[n], u[n - 1]
        cur = c * prev + np.cross(k, prev) + k * (k @ prev) / (1.0 + c)  # Rodrigues with k = sin * axis
        cur -= (cur @ t[n]) * t[n]  # keep exactly perpendicular despite rounding
        u[n] = cur / np.linalg.norm(cur)
    return t, u, np.cross(t, u)


def native_spacing(geometry: Geometry) -> float:
    """The scan's finest in-plane pixel spacing (mm): the pixel size of cross-sections."""
    return float(min(geometry.spacing[1], geometry.spacing[2]))


def section_coords(
    geometry: Geometry, centerline_mm: np.ndarray, crop_px: int, step_mm: float, partial: bool = False
) -> tuple[np.ndarray, float, np.ndarray]:
    """Where the pixels of the cross-sections along a centerline lie in the volume.

    Cross-sections are placed every ``step_mm`` of arclength (see `resample_centerline`), oriented by
    `transport_frames`, with pixel spacing `native_spacing`. A cross-section is left out when any of its
    pixels lies outside the volume's voxel footprint (index ``-0.5 .. dim - 0.5`` along each axis), or with
    ``partial`` only when its centre does (segmentation cuts the vessel to the scan's edge; `sample` repeats
    the edge voxels beyond it).

    Args:
        geometry: the grid.
        centerline_mm: ``(P, 3)`` LPS mm points.
        crop_px: side ``S`` of each cross-section in pixels.
        step_mm: arclength between cross-sections.

    Returns:
        ``(coords, spacing_mm, kept)``: ``(N, 3, S, S)`` float64 fractional voxel indices ``(k, j, i)`` of every
        pixel, the pixel spacing (mm), and ``(N,)`` int indices of the kept cross-sections into
        ``resample_centerline(centerline_mm, step_mm)``.
    """
    spacing = native_spacing(geometry)
    centers = resample_centerline(centerline_mm, step_mm)
    if len(centers) < 2:
        return np.zeros((0, 3, crop_px, crop_px)), spacing, np.zeros(0, dtype=np.int64)
    _, u, v = transport_frames(centers, step_mm)
    to_index = np.linalg.inv(geometry.affine_lps[:3, :3])  # LPS direction -> (k, j, i) direction
    c_idx = geometry.world_to_index(centers)
    u_idx, v_idx = (u @ to_index.T) * spacing, (v @ to_index.T) * spacing  # index step per pixel
    half = (crop_px - 1) / 2.0
    corners = (
        c_idx[:, None, None, :]
        + np.array([-half, half])[None, :, None, None] * v_idx[:, None, None, :]
        + np.array([-half, half])[None, None, :, None] * u_idx[:, None, None, :]
    )
    corners = corners.reshape(len(centers), 4, 3)
    upper = np.asarray(geometry.shape, dtype=np.float64) - 0.5
    if partial:
        inside = np.all((c_idx >= -0.5) & (c_idx <= upper), axis=1)
    else:
        inside = np.all((corners >= -0.5) & (corners <= upper), axis=(1, 2))  # a plane is convex: corners suffice
    kept = np.flatnonzero(inside)
    offs = np.arange(crop_px) - half
    coords = (
        c_idx[kept][:, :, None, None]
        + v_idx[kept][:, :, None, None] * offs[None, None, :, None]
        + u_idx[kept][:, :, None, None] * offs[None, None, None, :]
    )
    return coords, spacing, kept


def sample(volume: np.ndarray, coords: np.ndarray, order: int) -> np.ndarray:
    """``volume`` at ``coords`` ``(N, 3, S, S)`` (`section_coords`): ``(N, S, S)``, trilinear (``order`` 1) or
    nearest (0), in chunks that bound memory; values beyond the volume take the nearest edge voxel."""
    n, _, rows, cols = coords.shape
    out = np.empty((n, rows, cols), dtype=volume.dtype)
    chunk = max(1, CHUNK_PIXELS // (rows * cols))
    for start in range(0, n, chunk):
        flat = np.moveaxis(coords[start : start + chunk], 1, 0).reshape(3, -1)
        out[start : start + chunk] = ndimage.map_coordinates(volume, flat, order=order, mode="nearest").reshape(
            -1, rows, cols
        )
    return out


def cross_sections(
    hu: np.ndarray,
    labels: np.ndarray,
    geometry: Geometry,
    centerline_mm: np.ndarray,
    crop_px: int,
    step_mm: float,
) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
    """Sample planes perpendicular to a centerline (`section_coords`): HU trilinearly, labels by nearest neighbour.

    Args:
        hu: ``(Z, Y, X)`` Hounsfield units.
        labels: ``(Z, Y, X)`` uint8 classes on the same grid.
        geometry: the grid.
        centerline_mm: ``(P, 3)`` LPS mm points.
        crop_px: side ``S`` of each cross-section in pixels.
        step_mm: arclength between cross-sections.

    Returns:
        ``(images, labels, spacing_mm, kept)``: ``(N, S, S)`` float32 HU, ``(N, S, S)`` uint8 labels,
        the pixel spacing (mm), and ``(N,)`` int indices of the kept cross-sections into
        ``resample_centerline(centerline_mm, step_mm)`` (the others left the volume).
    """
    coords, spacing, kept = section_coords(geometry, centerline_mm, crop_px, step_mm)
    images = sample(np.asarray(hu, dtype=np.float32), coords, order=1)
    return images, sample(np.asarray(labels, dtype=np.uint8), coords, order=0), spacing, kept


def window(images_hu: np.ndarray, window_hu: tuple[float, float]) -> np.ndarray:
    """Clip HU to ``[lo, hi]`` and scale linearly to ``[0, 1]``; returns float32 of the same shape."""
    lo, hi = float(window_hu[0]), float(window_hu[1])
    return ((np.clip(images_hu, lo, hi) - lo) / (hi - lo)).astype(np.float32)


def axial_tile_coords(shape: tuple[int, int, int], crop_px: int) -> np.ndarray:
    """Fractional voxel indices ``(N, 3, S, S)`` of square tiles of side ``S = crop_px`` that cover every axial
    slice of a volume of ``shape`` edge to edge (the last row and column of tiles overhang the volume and
    `sample` repeats its edge there): the cross-sections of a scan without a centerline."""
    z, y, x = shape
    rows = np.arange(0, y, crop_px)
    cols = np.arange(0, x, crop_px)
    k, r0, c0 = np.meshgrid(np.arange(z), rows, cols, indexing="ij")
    k, r0, c0 = k.ravel(), r0.ravel(), c0.ravel()
    offs = np.arange(crop_px, dtype=np.float64)
    coords = np.empty((len(k), 3, crop_px, crop_px))
    coords[:, 0] = k[:, None, None]
    coords[:, 1] = r0[:, None, None] + offs[None, :, None]
    coords[:, 2] = c0[:, None, None] + offs[None, None, :]
    return coords


def resize(images: np.ndarray, labels: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Resize ``(N, S, S)`` slices to ``(N, size, size)``: bilinear images, nearest labels.

    Pixel centres are aligned (the slice's field of view is kept), so the new pixel spacing is
    ``spacing * S / size``. Returns the inputs unchanged when ``size == S``.
    """
    side = images.shape[-1]
    if size == side:
        return images, labels
    zoom = (1.0, size / side, size / side)
    out_img = ndimage.zoom(images, zoom, order=1, mode="nearest", grid_mode=True).astype(np.float32)
    out_lab = ndimage.zoom(labels, zoom, order=0, mode="nearest", grid_mode=True).astype(np.uint8)
    return out_img, out_lab


def _empty(crop_px: int) -> tuple[np.ndarray, np.ndarray]:
    return (np.zeros((0, crop_px, crop_px), dtype=np.float32), np.zeros((0, crop_px, crop_px), dtype=np.uint8))
