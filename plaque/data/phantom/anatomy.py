"""Per-patient phantom parameters, sampled from published or assumed ranges (sources: README, The phantom cohort).

`sample_spec` draws everything that defines one synthetic patient (scanner, grid, vessel course,
lumen taper, wall, plaques, surrounding tissue and distractors) from
``np.random.default_rng([seed, index])``; it renders nothing and is cheap, so case-mix statistics
can be checked over thousands of specs.

Plaque geometry, burden and remodelling: see `plaque.data.phantom.plaques`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from plaque.data.phantom.centerline import PathModel, segment_length
from plaque.data.phantom.plaques import END_GAP_MM, Plaque, place_plaques, sample_plaque
from plaque.data.phantom.plaques import uniform as _u
from plaque.io.geometry import Geometry

# Published or assumed ranges (sources: README, The phantom cohort); the scanner ranges come from the config.
CASE_MIX: dict[str, float] = {"none": 0.33, "calcified": 0.37, "mixed": 0.24, "non_calcified": 0.06}
LUMEN_HU_BY_KV: dict[int, tuple[float, float]] = {
    80: (500.0, 700.0),
    100: (400.0, 600.0),
    120: (290.0, 380.0),
    140: (230.0, 320.0),
}
# Noise SD is drawn from this part of the configured range: lower tube voltage, more noise.
NOISE_PART_BY_KV: dict[int, tuple[float, float]] = {
    80: (0.33, 1.0),
    100: (0.17, 0.83),
    120: (0.0, 0.67),
    140: (0.0, 0.5),
}
WALL_HU, WALL_MM = (40.0, 100.0), (0.5, 1.0)
FAT_HU, FAT_SD_HU, FAT_CORR_MM = (-120.0, -50.0), (15.0, 25.0), (1.0, 2.5)
MYO_HU, MYO_SD_HU = (70.0, 130.0), 6.0
LUMEN_PROX_MM, LUMEN_DIST_MM = (3.0, 4.5), (1.5, 2.5)
LENGTH_MM = (3.0, 20.0)
SEGMENT_MM = (35.0, 50.0)  # vessel length inside the volume
MARGIN_MM, MARGIN_MIN_PX = 14.0, 36  # in-plane margin of the axis (>= half a 64-pixel cross-section)
SECTION_HALF_PX = 32  # half the side of the default cross-section (preprocess.crop_px = 64)
MIN_PLAQUE_RANGE_MM = 20.0
PLAQUES_PER_CASE: dict[str, tuple[tuple[int, ...], tuple[float, ...]]] = {
    "none": ((0,), (1.0,)),
    "calcified": ((1, 2, 3), (0.5, 0.3, 0.2)),
    "non_calcified": ((1, 2), (0.7, 0.3)),
    "mixed": ((1, 2, 3), (0.5, 0.35, 0.15)),
}


@dataclass(frozen=True)
class Scanner:
    """Acquisition parameters of one patient (mm, HU, kV)."""

    kv: int
    lumen_hu: float
    pixel_mm: float
    increment_mm: float
    thickness_mm: float
    psf_fwhm_xy_mm: float
    psf_fwhm_z_mm: float
    noise_sd_hu: float
    noise_corr_mm: float


@dataclass(frozen=True)
class Surroundings:
    """Tissue around the vessel and the distractors. Directions are in-plane unit ``(x, y)`` vectors."""

    fat_hu: float
    fat_sd_hu: float
    fat_corr_mm: float
    myo_hu: float
    myo_sd_hu: float
    heart_dir: tuple[float, float]  # from the vessel towards the myocardium
    heart_radius_mm: float  # in-plane radius of curvature of the epicardial surface
    myo_thickness_mm: float
    fat_gap_mm: float  # fat between the outer wall and the myocardium
    chamber_hu: float  # contrast-filled cavity beyond the myocardium
    vein_radius_mm: float
    vein_hu: float
    vein_offset_mm: float  # signed, along the in-plane perpendicular of heart_dir
    vein_drift: float  # change of the offset per mm of z
    lung: bool
    lung_distance_mm: float
    lung_hu: float
    pericardium_mm: float
    pericardium_hu: float
    spot_centre: tuple[float, float, float] | None  # off-vessel calcium (LPS mm), unlabelled
    spot_radii_mm: tuple[float, float, float]
    spot_axes: tuple[tuple[float, float, float], ...]  # rows: unit axes of the ellipsoid
    spot_hu: float


@dataclass(frozen=True)
class PatientSpec:
    """Everything that defines one synthetic patient; rendering is deterministic given this."""

    index: int
    seed: int
    case_type: str
    scanner: Scanner
    shape: tuple[int, int, int]  # (Z, Y, X)
    origin: tuple[float, float, float]  # LPS mm of voxel [0, 0, 0]
    path: PathModel
    segment_mm: float  # arclength inside the volume (s from 0 to segment_mm)
    lumen_prox_mm: float  # diameters
    lumen_dist_mm: float
    wall_mm: float
    wall_hu: float
    plaques: tuple[Plaque, ...]
    surroundings: Surroundings

    @property
    def geometry(self) -> Geometry:
        """The acquisition grid (axial, LPS)."""
        sc = self.scanner
        return Geometry.axial(self.shape, np.array(self.origin), (sc.increment_mm, sc.pixel_mm, sc.pixel_mm))

    @property
    def z_bottom(self) -> float:
        return self.origin[2]

    @property
    def z_top(self) -> float:
        return self.origin[2] + (self.shape[0] - 1) * self.scanner.increment_mm

    def lumen_radius(self, s: np.ndarray) -> np.ndarray:
        """Reference (plaque-free) lumen radius (mm) at arclength ``s``: linear taper, proximal to distal."""
        f = np.clip(np.asarray(s) / self.segment_mm, 0.0, 1.0)
        return 0.5 * (self.lumen_prox_mm + (self.lumen_dist_mm - self.lumen_prox_mm) * f)

    @property
    def max_outward_mm(self) -> float:
        """Largest outward plaque displacement of the outer boundary (mm)."""
        return max((p.d_out_mm for p in self.plaques), default=0.0)

    @property
    def max_outer_radius_mm(self) -> float:
        """An upper bound of the outer-wall radius anywhere along the vessel (mm)."""
        return 0.5 * max(self.lumen_prox_mm, self.lumen_dist_mm) + self.wall_mm + self.max_outward_mm

    def summary(self) -> dict[str, Any]:
        """The sampled truth as a JSON-ready dict (no identifying information)."""
        sc, su = self.scanner, self.surroundings
        plaques = []
        for p in self.plaques:
            d = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(p).items()}
            for k in ("angle", "half_width", "core_angle", "core_half_width"):
                d[k + "_deg"] = round(math.degrees(d.pop(k)), 2)
            d["twist_deg_per_mm"] = round(math.degrees(d.pop("twist")), 3)
            plaques.append(d)
        return {
            "index": self.index,
            "seed": self.seed,
            "case_type": self.case_type,
            "scanner": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(sc).items()},
            "shape": list(self.shape),
            "spacing_mm": [sc.increment_mm, sc.pixel_mm, sc.pixel_mm],
            "segment_mm": round(self.segment_mm, 3),
            "lumen_diameter_mm": {"proximal": round(self.lumen_prox_mm, 3), "distal": round(self.lumen_dist_mm, 3)},
            "wall_mm": round(self.wall_mm, 3),
            "wall_hu": round(self.wall_hu, 1),
            "fat_hu": round(su.fat_hu, 1),
            "fat_sd_hu": round(su.fat_sd_hu, 1),
            "myocardium_hu": round(su.myo_hu, 1),
            "chamber_hu": round(su.chamber_hu, 1),
            "vein": {"radius_mm": round(su.vein_radius_mm, 3), "hu": round(su.vein_hu, 1)},
            "lung": su.lung,
            "off_vessel_calcium": None
            if su.spot_centre is None
            else {"radii_mm": [round(r, 3) for r in su.spot_radii_mm], "hu": round(su.spot_hu, 1)},
            "plaques": plaques,
        }


def _sample_scanner(rng: np.random.Generator, sc: dict[str, Any]) -> Scanner:
    kvs = sorted(int(k) for k in sc["kv_mix"])
    probs = np.array([float(sc["kv_mix"][k] if k in sc["kv_mix"] else sc["kv_mix"][str(k)]) for k in kvs])
    kv = int(kvs[int(rng.choice(len(kvs), p=probs / probs.sum()))])
    lo, hi = sc["noise_sd_hu"]
    f0, f1 = NOISE_PART_BY_KV.get(kv, (0.0, 1.0))
    return Scanner(
        kv=kv,
        lumen_hu=_u(rng, LUMEN_HU_BY_KV.get(kv, (300.0, 500.0))),
        pixel_mm=round(_u(rng, sc["pixel_mm"]), 4),
        increment_mm=round(_u(rng, sc["increment_mm"]), 3),
        thickness_mm=round(_u(rng, sc["thickness_mm"]), 3),
        psf_fwhm_xy_mm=_u(rng, sc["psf_fwhm_xy_mm"]),
        psf_fwhm_z_mm=_u(rng, sc["psf_fwhm_z_mm"]),
        noise_sd_hu=_u(rng, (lo + f0 * (hi - lo), lo + f1 * (hi - lo))),
        noise_corr_mm=_u(rng, sc["noise_corr_mm"]),
    )


def _sample_path(
    rng: np.random.Generator, matrix: int, p: float, origin_xy: tuple[float, float], seg: float
) -> PathModel:
    """A smooth oblique course whose axis stays inside the in-plane margin over ``|z - zc| <= seg/2 + 2``."""
    ang = _u(rng, (0.0, 2 * math.pi))
    slope = _u(rng, (0.1, 0.45)) * np.array([math.cos(ang), math.sin(ang)])
    amp = rng.uniform(0.5, 1.5, size=(2, 2)) * rng.choice([-1.0, 1.0], size=(2, 2))
    lam = rng.uniform(30.0, 80.0, size=2)  # radius of curvature >= ~10 mm
    phase = rng.uniform(0.0, 2 * math.pi, size=(2, 2))
    raw = PathModel((0.0, 0.0, 0.0), tuple(slope), tuple(map(tuple, amp)), tuple(lam), tuple(map(tuple, phase)))
    t = np.linspace(-seg / 2 - 2.0, seg / 2 + 2.0, 241)
    dev = raw.deviation(t)
    margin = min(max(MARGIN_MIN_PX, math.ceil(MARGIN_MM / p)), matrix // 2 - 6) * p
    allowed = (matrix - 1) * p - 2 * margin
    scale = np.minimum(1.0, allowed / np.maximum(np.ptp(dev, axis=0), 1e-9))
    dev = dev * scale
    lo = [o + margin - dev[:, a].min() for a, o in enumerate(origin_xy)]
    hi = [o + margin + allowed - dev[:, a].max() for a, o in enumerate(origin_xy)]
    centre = [_u(rng, (lo[a], max(lo[a], hi[a]))) for a in range(2)]
    return PathModel(
        (centre[0], centre[1], 0.0),
        tuple(slope * scale),
        tuple(map(tuple, amp * scale)),
        tuple(lam),
        tuple(map(tuple, phase)),
    )


def sample_case_type(rng: np.random.Generator) -> str:
    """One draw from `CASE_MIX`."""
    names = list(CASE_MIX)
    return names[int(rng.choice(len(names), p=np.array([CASE_MIX[n] for n in names])))]


def sample_spec(index: int, seed: int, cfg: dict[str, Any]) -> PatientSpec:
    """Draw one patient from ``np.random.default_rng([seed, index])``.

    Args:
        index: patient index (0-based).
        seed: cohort seed.
        cfg: the resolved ``phantom`` config section (``matrix``, ``scanner`` ranges, ...).

    Returns:
        The patient's spec. Same ``(seed, index, cfg)``, same spec.
    """
    rng = np.random.default_rng([seed, index])
    case_type = sample_case_type(rng)
    sc = _sample_scanner(rng, cfg["scanner"])
    matrix, p, inc = int(cfg["matrix"]), sc.pixel_mm, sc.increment_mm
    # The in-plane field is a crop of a 512^2 scan centred near the patient's midline.
    fov = 512 * p
    lo_c = max(0, min(96, 512 - matrix))
    i0, j0 = (int(rng.integers(lo_c, max(lo_c, 512 - matrix - lo_c) + 1)) for _ in range(2))
    origin_xy = (round(-fov / 2 + _u(rng, (-10, 10)) + i0 * p, 2), round(-fov / 2 + _u(rng, (-20, 20)) + j0 * p, 2))
    seg_target = _u(rng, SEGMENT_MM)
    path = _sample_path(rng, matrix, p, origin_xy, seg_target)
    sec = float(path.secant(np.linspace(-seg_target / 2, seg_target / 2, 101)).mean())
    nz = max(16, int(round(seg_target / sec / inc)) + 1)
    z_bottom = round(_u(rng, (-200.0, -80.0)), 2)
    z_top = z_bottom + (nz - 1) * inc
    zc = 0.5 * (z_top + z_bottom)
    path = PathModel((path.centre[0], path.centre[1], zc), path.slope, path.amp, path.wavelength, path.phase)
    seg = segment_length(path, z_top, z_bottom)

    prox, dist = _u(rng, LUMEN_PROX_MM), _u(rng, LUMEN_DIST_MM)
    wall, wall_hu = _u(rng, WALL_MM), _u(rng, WALL_HU)
    counts, probs = PLAQUES_PER_CASE[case_type]
    n_plaques = int(counts[int(rng.choice(len(counts), p=np.array(probs)))])
    kinds = {
        "none": [],
        "calcified": ["calcified"] * n_plaques,
        "non_calcified": ["non_calcified"] * n_plaques,
        "mixed": ["mixed"]
        + [str(rng.choice(["calcified", "non_calcified", "mixed"], p=[0.4, 0.3, 0.3])) for _ in range(n_plaques - 1)],
    }[case_type]
    # Keep plaques where a cross-section of SECTION_HALF_PX pixels fits between the slabs.
    ends = []
    for z_end in (z_top, z_bottom):
        sec_end = float(path.secant(np.array([z_end]))[0])
        ends.append(SECTION_HALF_PX * math.sqrt(2.0) * p * math.sqrt(1.0 - 1.0 / sec_end**2) * sec_end + 1.0)
    if seg - sum(ends) < MIN_PLAQUE_RANGE_MM:
        ends = [END_GAP_MM, END_GAP_MM]
    placed = place_plaques(rng, [_u(rng, LENGTH_MM) for _ in kinds], ends[0], seg - ends[1])
    plaques = []
    for i, c, length in placed:
        kind = kinds[i]
        r_l = float(0.5 * (prox + (dist - prox) * min(max(c / seg, 0.0), 1.0)))
        plaques.append(sample_plaque(rng, kind, c, length, r_l, wall, sc.lumen_hu))

    surroundings = _sample_surroundings(
        rng,
        sc,
        matrix,
        origin_xy,
        path,
        z_top,
        z_bottom,
        0.5 * max(prox, dist) + wall + max((q.d_out_mm for q in plaques), default=0.0),
        0.5 * min(prox, dist) + wall,
    )
    return PatientSpec(
        index=int(index),
        seed=int(seed),
        case_type=case_type,
        scanner=sc,
        shape=(nz, matrix, matrix),
        origin=(origin_xy[0], origin_xy[1], z_bottom),
        path=path,
        segment_mm=seg,
        lumen_prox_mm=prox,
        lumen_dist_mm=dist,
        wall_mm=wall,
        wall_hu=wall_hu,
        plaques=tuple(plaques),
        surroundings=surroundings,
    )


def _sample_surroundings(
    rng: np.random.Generator,
    sc: Scanner,
    matrix: int,
    origin_xy: tuple[float, float],
    path: PathModel,
    z_top: float,
    z_bottom: float,
    r_outer: float,
    r_outer_min: float,
) -> Surroundings:
    """Fat, myocardium, chamber, lung and the distractors (vein, off-vessel calcium).

    ``r_outer`` bounds the outer-wall radius from above, ``r_outer_min`` from below (mm).
    """
    zs = np.linspace(z_bottom, z_top, 64)
    sec_max = float(path.secant(zs).max())
    r_tube = r_outer * sec_max  # in-plane half-extent bound of the vessel
    hd_ang = _u(rng, (0.0, 2 * math.pi))
    u = np.array([math.cos(hd_ang), math.sin(hd_ang)])
    e = np.array([-u[1], u[0]])
    gap = _u(rng, (1.0, 3.5))
    heart_r, myo_t = _u(rng, (25.0, 60.0)), _u(rng, (5.0, 11.0))
    vein_r = min(_u(rng, (0.9, 2.0)), r_outer_min + gap - 0.4)  # stays clear of the myocardium
    drift = _u(rng, (-0.08, 0.08))
    vein_off = r_tube + vein_r + 1.5 + abs(drift) * (z_top - z_bottom) / 2 + _u(rng, (0.0, 4.0))
    vein_off *= float(rng.choice([-1.0, 1.0]))
    lung = bool(rng.random() < 0.5)
    lung_d = _u(rng, (max(8.0, r_tube + 5.0), max(16.0, r_tube + 8.0)))
    # Off-vessel calcium: rejection-sample a position in fat or on the epicardium, inside the field.
    radii = tuple(float(v) for v in (_u(rng, (0.4, 1.2)), _u(rng, (0.4, 1.2)), _u(rng, (0.6, 1.6))))
    q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    spot = None
    fov = (matrix - 1) * sc.pixel_mm
    for _ in range(40):
        z = _u(rng, (z_bottom + 2.0, z_top - 2.0))
        beta, rho = _u(rng, (0.0, 2 * math.pi)), _u(rng, (r_tube + max(radii) + 2.0, r_tube + max(radii) + 8.0))
        c = path.xy(np.array([z]))[0]
        pos = c + rho * np.array([math.cos(beta), math.sin(beta)])
        rel = pos - c
        vein_c = c + e * (vein_off + drift * (z - path.centre[2]))
        inside = all(origin_xy[a] + 2.5 <= pos[a] <= origin_xy[a] + fov - 2.5 for a in range(2))
        off_vein = np.linalg.norm(pos - vein_c) > vein_r + max(radii) + 1.5
        d_heart = np.linalg.norm(rel - u * (r_tube + gap + heart_r))  # distance to the heart's in-plane centre
        not_chamber = d_heart > heart_r - myo_t + max(radii) + 1.0
        not_lung = not lung or float(rel @ -u) < lung_d - 2.0
        if inside and off_vein and not_chamber and not_lung:
            spot = (float(pos[0]), float(pos[1]), float(z))
            break
    return Surroundings(
        fat_hu=_u(rng, FAT_HU),
        fat_sd_hu=_u(rng, FAT_SD_HU),
        fat_corr_mm=_u(rng, FAT_CORR_MM),
        myo_hu=_u(rng, MYO_HU),
        myo_sd_hu=MYO_SD_HU,
        heart_dir=(float(u[0]), float(u[1])),
        heart_radius_mm=heart_r,
        myo_thickness_mm=myo_t,
        fat_gap_mm=gap,
        chamber_hu=sc.lumen_hu * _u(rng, (0.9, 1.05)),
        vein_radius_mm=vein_r,
        vein_hu=sc.lumen_hu * _u(rng, (0.45, 0.85)),
        vein_offset_mm=vein_off,
        vein_drift=drift,
        lung=lung,
        lung_distance_mm=lung_d,
        lung_hu=_u(rng, (-900.0, -780.0)),
        pericardium_mm=_u(rng, (0.7, 1.5)),
        pericardium_hu=_u(rng, (20.0, 60.0)),
        spot_centre=spot,
        spot_radii_mm=radii,
        spot_axes=tuple(tuple(float(v) for v in row) for row in q),
        spot_hu=_u(rng, (500.0, 1500.0)),
    )
