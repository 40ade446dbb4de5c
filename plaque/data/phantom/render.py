"""Imaging physics of the phantom: area integration, point-spread function, correlated noise.

The image of a patient is formed in three steps on the acquisition grid ``(Z, Y, X)``:

1. Object: the mean attenuation (HU) over each voxel. Small, high-contrast structures (the coronary
   tube and off-vessel calcium) are rendered by supersampling: ``factor`` points per axis inside each
   voxel are evaluated on the analytic geometry and averaged (a block mean = area integration), so
   partial volume arises by itself. Large, low-contrast structures are rendered at voxel centres with
   edges softened by `ramp`, the exact voxel-box integral across a planar edge.
2. Point-spread function: a Gaussian of the sampled in-plane and z FWHM; in z it also carries the
   slice-thickness box beyond the increment already integrated in step 1
   (``sigma_z^2 = (FWHM_z / 2.355)^2 + (thickness^2 - increment^2) / 12``). Calcium blooming and the
   blurring of thin walls follow from this blur; nothing is painted.
3. Noise: white Gaussian noise smoothed by a Gaussian of ``corr_mm`` (mm) and rescaled to the target SD.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from plaque.io.geometry import Geometry

FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))
PSF_TRUNCATE = 3.0


def ramp(distance: np.ndarray, width: float) -> np.ndarray:
    """Fraction of a voxel of size ``width`` (mm) lying beyond a planar edge at signed ``distance`` (mm).

    Positive ``distance`` means the voxel centre is inside; the result is in ``[0, 1]``, same shape.
    """
    return np.clip(distance / np.float32(width) + np.float32(0.5), 0.0, 1.0)


def smooth_field(
    rng: np.random.Generator, shape: tuple[int, int, int], spacing: tuple[float, float, float], corr_mm: float
) -> np.ndarray:
    """A smooth random texture of unit SD and zero mean.

    White noise on a coarse grid of spacing ``corr_mm`` is smoothed by one coarse pixel and linearly
    interpolated to the voxel grid.

    Args:
        rng: random source.
        shape: ``(Z, Y, X)`` voxels.
        spacing: ``(dz, dy, dx)`` mm.
        corr_mm: correlation length (mm).

    Returns:
        ``(Z, Y, X)`` float32.
    """
    coarse = tuple(int(math.ceil(n * d / max(corr_mm, d))) + 3 for n, d in zip(shape, spacing))
    field = ndimage.gaussian_filter(rng.standard_normal(coarse).astype(np.float32), 1.0, mode="wrap")
    out = ndimage.zoom(field, [n / c for n, c in zip(shape, coarse)], order=1, mode="nearest")
    out = out[: shape[0], : shape[1], : shape[2]]
    if out.shape != tuple(shape):  # zoom rounding: pad by edge values
        out = np.pad(out, [(0, n - m) for n, m in zip(shape, out.shape)], mode="edge")
    out -= out.mean()
    out /= max(float(out.std()), 1e-6)
    return out.astype(np.float32, copy=False)


def subsample_offsets(geometry: Geometry, factor: int) -> np.ndarray:
    """``(factor**3, 3)`` LPS mm offsets of the sub-voxel sample points from a voxel centre.

    The points are the centres of a ``factor``-per-axis subdivision of the voxel (they include the
    voxel centre when ``factor`` is odd).
    """
    f = (np.arange(factor) + 0.5) / factor - 0.5
    kk, jj, ii = np.meshgrid(f, f, f, indexing="ij")
    kji = np.stack([kk.ravel(), jj.ravel(), ii.ravel()], axis=1)
    return kji @ geometry.affine_lps[:3, :3].T


def half_diagonal(geometry: Geometry) -> float:
    """Half the diagonal of a voxel (mm): the farthest a voxel's points lie from its centre."""
    return 0.5 * float(np.linalg.norm(geometry.spacing))


def render_ellipsoid(
    geometry: Geometry,
    background: np.ndarray,
    centre: np.ndarray,
    radii: np.ndarray,
    axes: np.ndarray,
    hu: float,
    factor: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Supersampled solid ellipsoid of uniform ``hu`` replacing ``background`` where it lies.

    Args:
        geometry: the grid.
        background: ``(Z, Y, X)`` HU the ellipsoid replaces (read only).
        centre: ``(3,)`` LPS mm.
        radii: ``(3,)`` semi-axes (mm) along the rows of ``axes``.
        axes: ``(3, 3)`` orthonormal rows.
        hu: attenuation inside (before blur).
        factor: sub-samples per axis.

    Returns:
        ``(flat, delta, inside)``: flat voxel indices ``(n,)``, the HU change of each voxel's mean
        ``(n,)`` float32, and whether each voxel centre is inside ``(n,)`` bool (its label geometry).
    """
    centre, radii, axes = (np.asarray(a, dtype=np.float64) for a in (centre, radii, axes))
    reach = float(radii.max()) + half_diagonal(geometry)
    corners = centre + reach * np.array([[a, b, c] for a in (-1, 1) for b in (-1, 1) for c in (-1, 1)])
    kji = geometry.world_to_index(corners)
    lo = np.maximum(np.floor(kji.min(axis=0)).astype(int), 0)
    hi = np.minimum(np.ceil(kji.max(axis=0)).astype(int) + 1, np.array(geometry.shape))
    if np.any(hi <= lo):
        return np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, bool)
    grid = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij"), axis=-1).reshape(-1, 3)
    pts = geometry.index_to_world(grid)
    local = (pts - centre) @ axes.T / radii  # (n, 3) in units of the semi-axes
    offs = subsample_offsets(geometry, factor) @ axes.T / radii  # (F, 3)
    inside_sub = ((local[:, None, :] + offs[None, :, :]) ** 2).sum(axis=2) < 1.0
    frac = inside_sub.mean(axis=1)
    flat = np.ravel_multi_index(tuple(grid.T), geometry.shape)
    keep = frac > 0
    flat, frac = flat[keep], frac[keep]
    inside = (local[keep] ** 2).sum(axis=1) < 1.0
    delta = (frac * (hu - background.ravel()[flat])).astype(np.float32)
    return flat.astype(np.int64), delta, inside


def psf_sigma_vox(geometry: Geometry, fwhm_xy_mm: float, fwhm_z_mm: float, thickness_mm: float) -> tuple[float, ...]:
    """Gaussian PSF sigma in voxels ``(z, y, x)`` (see the module docstring for the z term)."""
    dz, dy, dx = geometry.spacing
    sz = math.sqrt((fwhm_z_mm * FWHM_TO_SIGMA) ** 2 + max(0.0, thickness_mm**2 - dz**2) / 12.0)
    sxy = fwhm_xy_mm * FWHM_TO_SIGMA
    return (sz / dz, sxy / dy, sxy / dx)


def apply_psf(
    volume: np.ndarray, geometry: Geometry, fwhm_xy_mm: float, fwhm_z_mm: float, thickness_mm: float
) -> np.ndarray:
    """Blur an area-integrated ``(Z, Y, X)`` HU volume by the scanner PSF; returns float32."""
    sigma = psf_sigma_vox(geometry, fwhm_xy_mm, fwhm_z_mm, thickness_mm)
    return ndimage.gaussian_filter(volume.astype(np.float32, copy=False), sigma, mode="nearest", truncate=PSF_TRUNCATE)


def correlated_noise(
    rng: np.random.Generator,
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    sd_hu: float,
    corr_mm: float,
) -> np.ndarray:
    """Stationary Gaussian noise ``(Z, Y, X)`` float32 of SD ``sd_hu``, smoothed by a ``corr_mm`` Gaussian."""
    white = rng.standard_normal(shape, dtype=np.float32)
    if corr_mm > 0:
        white = ndimage.gaussian_filter(white, [corr_mm / d for d in spacing], mode="wrap", truncate=PSF_TRUNCATE)
    white *= np.float32(sd_hu / max(float(white.std()), 1e-12))
    return white
