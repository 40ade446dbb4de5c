"""Patient anatomy to HU and labels: the background tissue and the supersampled coronary tube.

Rendering choice for speed: only voxels that the coronary tube can touch (and the off-vessel
calcium, see `render.render_ellipsoid`) are supersampled from the analytic geometry. The rest of the
field (fat texture, myocardium, contrast-filled chamber, vein, pericardium, lung) is smooth or
low-contrast at the voxel scale and is rendered once at voxel centres, with edges softened by the
voxel-box integral of a planar edge (`render.ramp`). Voxels lying wholly inside the lumen need no
sub-samples either. The PSF is then applied to the whole volume, so every structure is blurred alike.

Tube voxels are found per slice around the axis crossing, then a KD-tree (`scipy.spatial.cKDTree`)
on the dense centerline gives each voxel its nearest axis point; its sub-samples use that point's
tangent and rotation-minimising frame to get arclength ``s``, radius ``r`` and angle ``theta``
(a local linearisation over at most half a voxel diagonal: below 0.01 mm of error at the
curvatures used).

Tissue codes along the tube: 0 outside, 1 wall, 2 lumen, ``3 + 2p`` calcified and ``4 + 2p``
non-calcified part of plaque ``p``.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.spatial import cKDTree

from plaque.classes import BACKGROUND, CALCIFIED, LUMEN, NONCALCIFIED, WALL
from plaque.data.phantom.anatomy import PatientSpec, Plaque
from plaque.data.phantom.centerline import Centerline
from plaque.data.phantom.render import half_diagonal, ramp, smooth_field, subsample_offsets
from plaque.io.geometry import Geometry

OUT, T_WALL, T_LUMEN = 0, 1, 2
CHUNK_VOXELS = 8192


def code_tables(spec: PatientSpec) -> tuple[np.ndarray, np.ndarray]:
    """``(hu, label)`` lookup tables indexed by tissue code (``hu[0] = 0`` for outside)."""
    hu = [0.0, spec.wall_hu, spec.scanner.lumen_hu]
    lab = [BACKGROUND, WALL, LUMEN]
    for p in spec.plaques:
        hu += [p.calcium_hu, p.ncp_hu]
        lab += [CALCIFIED, NONCALCIFIED]
    return np.array(hu, dtype=np.float32), np.array(lab, dtype=np.uint8)


def _bump(x: np.ndarray, half: float) -> np.ndarray:
    """cos^2 bump of support ``|x| < half``, peak 1 at 0."""
    return np.where(np.abs(x) < half, np.cos(0.5 * np.pi * x / half) ** 2, 0.0)


def _wrap(a: np.ndarray) -> np.ndarray:
    return (a + np.pi) % (2 * np.pi) - np.pi


def tissue_codes(spec: PatientSpec, s: np.ndarray, r: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Tissue code (uint8, same shape) at tube coordinates: arclength ``s`` and radius ``r`` (mm), angle (rad)."""
    r_lumen = spec.lumen_radius(s)
    r_in, r_plq = r_lumen.copy(), r_lumen.copy()
    plq_code = np.zeros(s.shape, dtype=np.uint8)
    for n, p in enumerate(spec.plaques):
        m = np.abs(s - p.s_mm) < p.length_mm / 2
        if not m.any():
            continue
        ds = s[m] - p.s_mm
        a = _bump(ds, p.length_mm / 2)
        dth = _wrap(theta[m] - (p.angle + p.twist * ds))
        ag = a * _bump(dth, p.half_width)
        lo, hi = r_lumen[m] - p.d_in_mm * ag, r_lumen[m] + p.d_out_mm * ag
        r_in[m], r_plq[m] = lo, hi
        calc, ncp = 3 + 2 * n, 4 + 2 * n
        if p.kind == "calcified":
            plq_code[m] = calc
        elif p.kind == "non_calcified":
            plq_code[m] = ncp
        else:
            depth = (hi - r[m]) / np.maximum(hi - lo, 1e-6)  # 0 at the outer plaque boundary, 1 at the lumen
            core = (
                p.core_depth
                * _bump(s[m] - p.core_s_mm, p.core_length_mm / 2)
                * _bump(_wrap(dth - p.core_angle), p.core_half_width)
            )
            plq_code[m] = np.where(depth < core, calc, ncp)
    return np.where(
        r < r_in, T_LUMEN, np.where(r < r_plq, plq_code, np.where(r < r_plq + spec.wall_mm, T_WALL, OUT))
    ).astype(np.uint8)


def _window_sum(plaques: tuple[Plaque, ...], s: np.ndarray, reach: float, attr: str) -> np.ndarray:
    """Sum of ``attr`` over plaques whose support comes within ``reach`` of ``s`` (a conservative bound)."""
    out = np.zeros_like(s)
    for p in plaques:
        out += np.where(np.abs(s - p.s_mm) < p.length_mm / 2 + reach, getattr(p, attr), 0.0)
    return out


def axis_crossings(spec: PatientSpec, geometry: Geometry) -> tuple[np.ndarray, np.ndarray]:
    """Per slice: the axis crossing ``(Z, 2)`` LPS ``(x, y)`` mm and the axial positions ``(Z,)`` mm."""
    z = geometry.origin[2] + geometry.spacing[0] * np.arange(geometry.shape[0])
    return spec.path.xy(z), z


def tube_voxels(spec: PatientSpec, cl: Centerline, geometry: Geometry) -> dict[str, np.ndarray]:
    """Voxels the tube can touch, with their nearest axis point and local coordinates.

    Returns:
        Dict of ``(n,)`` arrays: ``flat`` voxel index, ``near`` centerline index, ``s`` arclength,
        ``en``/``eb`` offsets along the frame normal/binormal (mm), ``pure`` (wholly inside the lumen).
    """
    (nz, ny, nx), (dz, dy, dx) = geometry.shape, geometry.spacing
    hd = half_diagonal(geometry)
    xy, z = axis_crossings(spec, geometry)
    tang = spec.path.direction(z)
    sec_max = float(spec.path.secant(z).max())
    r_max = spec.max_outer_radius_mm
    half = r_max * sec_max + hd + 0.5
    hy, hx = int(math.ceil(half / dy)), int(math.ceil(half / dx))
    jc = np.rint((xy[:, 1] - geometry.origin[1]) / dy).astype(int)
    ic = np.rint((xy[:, 0] - geometry.origin[0]) / dx).astype(int)
    jj = jc[:, None, None] + np.arange(-hy, hy + 1)[None, :, None]
    ii = ic[:, None, None] + np.arange(-hx, hx + 1)[None, None, :]
    kk = np.broadcast_to(np.arange(nz)[:, None, None], (nz, jj.shape[1], ii.shape[2]))
    jj, ii = np.broadcast_to(jj, kk.shape), np.broadcast_to(ii, kk.shape)
    vx = geometry.origin[0] + ii * dx - xy[:, 0, None, None]
    vy = geometry.origin[1] + jj * dy - xy[:, 1, None, None]
    along = vx * tang[:, 0, None, None] + vy * tang[:, 1, None, None]
    perp2 = vx**2 + vy**2 - along**2  # distance to the local axis line, squared
    keep = (jj >= 0) & (jj < ny) & (ii >= 0) & (ii < nx) & (perp2 < (r_max + hd + 0.3) ** 2)
    k, j, i = kk[keep], jj[keep], ii[keep]
    centres = np.stack([geometry.origin[0] + i * dx, geometry.origin[1] + j * dy, geometry.origin[2] + k * dz], axis=1)
    _, near = cKDTree(cl.points).query(centres)
    e = centres - cl.points[near]
    s = cl.s[near] + (e * cl.tangent[near]).sum(axis=1)
    en, eb = (e * cl.normal[near]).sum(axis=1), (e * cl.binormal[near]).sum(axis=1)
    r = np.hypot(en, eb)
    outer = spec.lumen_radius(s - hd) + spec.wall_mm + _window_sum(spec.plaques, s, hd, "d_out_mm")
    inner = spec.lumen_radius(s + hd) - _window_sum(spec.plaques, s, hd, "d_in_mm")
    near_tube = r - hd < outer
    pure = (r + hd + 0.02 < inner)[near_tube]
    flat = np.ravel_multi_index((k, j, i), geometry.shape)[near_tube]
    return {
        "flat": flat,
        "near": near[near_tube],
        "s": s[near_tube],
        "en": en[near_tube],
        "eb": eb[near_tube],
        "pure": pure,
    }


def render_tube(
    spec: PatientSpec, cl: Centerline, geometry: Geometry, background: np.ndarray, factor: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The coronary tube's contribution: area-integrated HU change and labels at voxel centres.

    Args:
        spec: the patient.
        cl: its dense centerline with frames.
        geometry: the grid.
        background: ``(Z, Y, X)`` HU of the tissue the tube replaces (read only).
        factor: sub-samples per axis.

    Returns:
        ``(flat, delta, labels)``: flat voxel indices ``(n,)``, HU to add ``(n,)`` float32 (voxel
        mean of the tube minus the background it covers), class ids at the voxel centres ``(n,)`` uint8.
    """
    tv = tube_voxels(spec, cl, geometry)
    hu_tab, lab_tab = code_tables(spec)
    bg = background.ravel()[tv["flat"]]
    centre_codes = tissue_codes(spec, tv["s"], np.hypot(tv["en"], tv["eb"]), np.arctan2(tv["eb"], tv["en"]))
    delta = np.where(tv["pure"], np.float32(spec.scanner.lumen_hu) - bg, 0.0).astype(np.float32)
    offs = subsample_offsets(geometry, factor)  # (F, 3)
    todo = np.flatnonzero(~tv["pure"])
    for c0 in range(0, todo.size, CHUNK_VOXELS):
        idx = todo[c0 : c0 + CHUNK_VOXELS]
        near = tv["near"][idx]
        s = tv["s"][idx, None] + cl.tangent[near] @ offs.T
        en = tv["en"][idx, None] + cl.normal[near] @ offs.T
        eb = tv["eb"][idx, None] + cl.binormal[near] @ offs.T
        codes = tissue_codes(spec, s, np.hypot(en, eb), np.arctan2(eb, en))
        delta[idx] = hu_tab[codes].mean(axis=1) - (codes > 0).mean(axis=1) * bg[idx]
    return tv["flat"], delta, lab_tab[centre_codes]


def render_background(spec: PatientSpec, cl: Centerline, geometry: Geometry, rng: np.random.Generator) -> np.ndarray:
    """Fat texture, myocardium, chamber, vein, and (some patients) pericardium and lung: ``(Z, Y, X)`` float32 HU.

    The epicardial surface is, in each slice, an arc of radius ``heart_radius_mm`` at distance
    ``fat_gap_mm`` beyond the vessel's outer wall on the ``heart_dir`` side; the myocardium is
    ``myo_thickness_mm`` thick and encloses the contrast-filled chamber.
    """
    su = spec.surroundings
    shape, spacing = geometry.shape, geometry.spacing
    xy, z = axis_crossings(spec, geometry)
    x = (geometry.origin[0] + spacing[2] * np.arange(shape[2])).astype(np.float32)[None, None, :]
    y = (geometry.origin[1] + spacing[1] * np.arange(shape[1])).astype(np.float32)[None, :, None]
    width = float(spacing[2])
    u, e = np.array(su.heart_dir), np.array([-su.heart_dir[1], su.heart_dir[0]])

    vol = np.float32(su.fat_hu) + np.float32(su.fat_sd_hu) * smooth_field(rng, shape, spacing, su.fat_corr_mm)
    myo = np.float32(su.myo_hu) + np.float32(su.myo_sd_hu) * smooth_field(rng, shape, spacing, 2.0)

    sec_max = float(spec.path.secant(z).max())
    reach = (spec.lumen_radius(cl.s_at_z(z)) + spec.wall_mm + spec.max_outward_mm) * sec_max + su.fat_gap_mm
    hc = (xy + u * (reach + su.heart_radius_mm)[:, None]).astype(np.float32)
    dist = np.sqrt((x - hc[:, 0, None, None]) ** 2 + (y - hc[:, 1, None, None]) ** 2)
    heart = ramp(su.heart_radius_mm - dist, width)
    vol += heart * (myo - vol)
    del myo
    vol += ramp(su.heart_radius_mm - su.myo_thickness_mm - dist, width) * (np.float32(su.chamber_hu) - vol)

    if su.lung:
        lin = (np.asarray(spec.path.centre[:2]) + np.outer(z - spec.path.centre[2], spec.path.slope)).astype(np.float32)
        dl = -(u[0] * (x - lin[:, 0, None, None]) + u[1] * (y - lin[:, 1, None, None]))
        vol += ramp(dl - (su.lung_distance_mm - su.pericardium_mm), width) * (np.float32(su.pericardium_hu) - vol)
        vol += ramp(dl - su.lung_distance_mm, width) * (np.float32(su.lung_hu) - vol)

    t = z - spec.path.centre[2]
    vc = (xy + np.outer(su.vein_offset_mm + su.vein_drift * t, e)).astype(np.float32)
    vslope = spec.path.deviation_slope(t) + su.vein_drift * e
    vt = np.concatenate([vslope, np.ones((len(z), 1))], axis=1)
    vt = (vt / np.linalg.norm(vt, axis=1, keepdims=True)).astype(np.float32)
    vx, vy = x - vc[:, 0, None, None], y - vc[:, 1, None, None]
    along = vx * vt[:, 0, None, None] + vy * vt[:, 1, None, None]
    vdist = np.sqrt(np.maximum(vx**2 + vy**2 - along**2, 0.0))
    vol += ramp(su.vein_radius_mm - vdist, width) * (np.float32(su.vein_hu) - vol)
    return vol.astype(np.float32, copy=False)
